# isvserver: `isvserver serve` (gunicorn and the job consumer) as an unprivileged user on port 8000.
# The instance folder (SQLite database, queue, development keys, metrics) is the volume
# /var/lib/isvserver; settings come from the environment (see config/settings.example.env).
#   docker build -t isvserver . && docker compose up -d   (compose.yaml: with PostgreSQL and Redis)

FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml setup.cfg README.md LICENSE ./
COPY isvserver ./isvserver
RUN python -m venv /opt/isvserver/.venv \
    && /opt/isvserver/.venv/bin/pip install --no-cache-dir --disable-pip-version-check ".[redis]"

FROM python:3.11-slim-bookworm
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/isvserver --shell /usr/sbin/nologin isvserver \
    && install -d -m 700 -o isvserver -g isvserver /var/lib/isvserver
COPY --from=build /opt/isvserver/.venv /opt/isvserver/.venv
ENV PATH=/opt/isvserver/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    ISV_INSTANCE_DIR=/var/lib/isvserver \
    ISV_BIND=0.0.0.0:8000
USER 10001:10001
WORKDIR /var/lib/isvserver
VOLUME ["/var/lib/isvserver"]
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4).status != 200)"]
ENTRYPOINT ["isvserver"]
CMD ["serve"]
