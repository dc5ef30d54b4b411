"""Core web endpoints (health probes, metrics, the OpenAPI document) and what isvserver brings to gunicorn:
its configuration, its worker class and its redacting logger."""
