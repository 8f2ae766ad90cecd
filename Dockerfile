# Mirrorsite: the registry mirror as an image. `python manage.py serve` migrates, then runs gunicorn.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The project is installed as a package; only manage.py is kept beside it.
COPY pyproject.toml README.md /src/
COPY mirrorsite /src/mirrorsite
COPY registry /src/registry
COPY dashboard /src/dashboard
COPY access /src/access
COPY audit /src/audit
RUN pip install /src && rm -rf /src

RUN useradd --system --create-home --home-dir /home/mirrorsite --shell /usr/sbin/nologin mirrorsite \
    && mkdir /data \
    && chown mirrorsite:mirrorsite /data

WORKDIR /app
COPY manage.py /app/manage.py

ENV MIRROR_DATA_DIR=/data
VOLUME ["/data"]
EXPOSE 5000

USER mirrorsite
CMD ["python", "manage.py", "serve"]
