"""Gunicorn settings for the mirror, from the same environment as Django's settings.

gthread workers (with an immediate answer to TLS probes on a plain-HTTP port, see
gunicorn_worker): blob hits go out through sendfile (gunicorn's wsgi.file_wrapper), so a
thread only waits on the socket; misses are filled by a thread and followed by the request's.
With REGISTRY_HTTP_TLS_CERTIFICATE and REGISTRY_HTTP_TLS_KEY the server speaks HTTPS itself
(Distribution's names), at the cost of sendfile: TLS bytes go through Python.
"""

from mirrorsite.config import load

# The settings' schema and loader only: gunicorn reads its settings before (and without) Django.
# Not named `config`: gunicorn would take that for its own setting of that name.
mirror_settings = load()

bind = [mirror_settings.REGISTRY_HTTP_ADDR]
# The measured default (README: "Why gunicorn with threads"); others, e.g. "gevent", for comparison.
worker_class = mirror_settings.MIRROR_WEB_WORKER_CLASS
workers = mirror_settings.MIRROR_WEB_WORKERS
threads = mirror_settings.MIRROR_WEB_THREADS
# Large blobs stream for minutes; the gthread heartbeat keeps the worker alive meanwhile.
timeout = 120
graceful_timeout = mirror_settings.MIRROR_WEB_GRACEFUL_TIMEOUT
keepalive = 75
accesslog = "-" if mirror_settings.MIRROR_ACCESS_LOG else None
errorlog = "-"
loglevel = mirror_settings.MIRROR_LOG_LEVEL.lower()
wsgi_app = "mirrorsite.wsgi:application"

certfile = mirror_settings.REGISTRY_HTTP_TLS_CERTIFICATE or None
keyfile = mirror_settings.REGISTRY_HTTP_TLS_KEY or None
if bool(certfile) != bool(keyfile):
    raise SystemExit("set both REGISTRY_HTTP_TLS_CERTIFICATE and REGISTRY_HTTP_TLS_KEY, or neither")


def worker_exit(server, worker) -> None:
    """Write what the worker buffered (pull times, account use, statistics, audit records) before it goes."""
    from registry import flushing

    flushing.flush_all()


def post_worker_init(worker) -> None:
    """Buffers are flushed from threads of each worker, each at its own interval."""
    from registry import flushing

    flushing.start()
