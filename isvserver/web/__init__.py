"""What isvserver brings to gunicorn: its configuration, its worker class and its redacting logger."""
