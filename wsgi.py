"""WSGI entry point for running gunicorn directly: `gunicorn -c config/gunicorn.conf.py wsgi:app`."""

from isvserver import create_app

app = create_app()
