# syntax=docker/dockerfile:1
# Build: dependencies into a virtualenv. Runtime: slim, non-root, only what runs.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY requirements.lock ./
RUN /opt/venv/bin/pip install -r requirements.lock

FROM python:3.11-slim AS runtime
# libgomp1: LightGBM's OpenMP runtime.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 custintel
COPY --from=build /opt/venv /opt/venv
WORKDIR /srv/custintel
# The source tree as it is in the repository: app/platform/migrate.py finds migrations/ beside app/.
COPY --chown=custintel:custintel alembic.ini ./
COPY --chown=custintel:custintel app ./app
COPY --chown=custintel:custintel migrations ./migrations
COPY --chown=custintel:custintel openapi ./openapi
RUN mkdir -p models_store data && chown custintel:custintel models_store data
USER custintel
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/srv/custintel \
    PYTHONUNBUFFERED=1 \
    CUSTINTEL_HOST=0.0.0.0 \
    CUSTINTEL_DATA_DIR=/srv/custintel/data \
    CUSTINTEL_MODELS_DIR=/srv/custintel/models_store
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz').status != 200)"
CMD ["python", "-m", "app.cli", "serve"]
