# Mirrorsite: the registry mirror as an image. `python manage.py serve` migrates, then runs gunicorn.
#
#   docker build -t mirrorsite .
#
# Built with BuildKit (the default builder since Docker 23; DOCKER_BUILDKIT=1 before that).
# Behind a TLS-inspecting proxy, give pip the CA bundle that proxy's certificates chain to, and
# an index of your own when PyPI is not the one to use (docs/docker.md):
#
#   docker build --secret id=pip_ca,src=/etc/ssl/certs/ca-certificates.crt \
#       --build-arg PIP_INDEX_URL=https://pypi.internal.example/simple -t mirrorsite .
#
# BASE is any Debian-like image with Python 3.11+, its venv module and useradd.
ARG BASE=python:3.11-slim-bookworm

# --- build: the project and its dependencies (all wheels) in a virtual environment, compiled to
# bytecode here so a container starts without compiling; pip stays behind in this stage.
FROM ${BASE} AS build
ARG PIP_INDEX_URL
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/mirrorsite
COPY pyproject.toml README.md /src/
COPY mirrorsite /src/mirrorsite
COPY registry /src/registry
COPY dashboard /src/dashboard
COPY access /src/access
COPY audit /src/audit
# The CA bundle is a secret mount: used by this step only, never stored in a layer or the history.
RUN --mount=type=secret,id=pip_ca \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi; \
    if [ -z "${PIP_INDEX_URL:-}" ]; then unset PIP_INDEX_URL; fi; \
    /opt/mirrorsite/bin/pip install --quiet /src \
    && /opt/mirrorsite/bin/pip uninstall --quiet --yes pip

# --- the image: the base, the virtual environment, an unprivileged user.
FROM ${BASE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/mirrorsite/bin:$PATH \
    MIRROR_DATA_DIR=/data

RUN useradd --system --create-home --home-dir /home/mirrorsite --shell /usr/sbin/nologin mirrorsite \
    && mkdir /data \
    && chown mirrorsite:mirrorsite /data

COPY --from=build /opt/mirrorsite /opt/mirrorsite
WORKDIR /app
COPY manage.py /app/manage.py

VOLUME ["/data"]
EXPOSE 5000

USER mirrorsite
# /healthz on the address the mirror listens on (REGISTRY_HTTP_ADDR; a wildcard means loopback).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; host, _, port = os.environ.get('REGISTRY_HTTP_ADDR', '0.0.0.0:5000').rpartition(':'); host = {'0.0.0.0': '127.0.0.1', '[::]': '[::1]', '': '127.0.0.1'}.get(host, host); scheme = 'https' if os.environ.get('REGISTRY_HTTP_TLS_CERTIFICATE') else 'http'; import ssl; urllib.request.urlopen(f'{scheme}://{host}:{port}/healthz', timeout=4, context=ssl._create_unverified_context())"]
CMD ["python", "manage.py", "serve"]
