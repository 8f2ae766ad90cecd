"""Gunicorn settings for the mirror, from the same environment as Django's settings.

gthread workers (with an immediate answer to TLS probes on a plain-HTTP port, see
gunicorn_worker): blob hits go out through sendfile (gunicorn's wsgi.file_wrapper), so a
thread only waits on the socket; misses are filled by a thread and followed by the request's.
With REGISTRY_HTTP_TLS_CERTIFICATE and REGISTRY_HTTP_TLS_KEY the server speaks HTTPS itself
(Distribution's names), at the cost of sendfile: TLS bytes go through Python.
"""

import os

bind = [os.environ.get("REGISTRY_HTTP_ADDR", "0.0.0.0:5000")]
# The measured default (README: "Why gunicorn with threads"); others, e.g. "gevent", for comparison.
worker_class = os.environ.get("MIRROR_WEB_WORKER_CLASS", "mirrorsite.gunicorn_worker.MirrorWorker")
workers = int(os.environ.get("MIRROR_WEB_WORKERS", "2"))
threads = int(os.environ.get("MIRROR_WEB_THREADS", "32"))
# Large blobs stream for minutes; the gthread heartbeat keeps the worker alive meanwhile.
timeout = 120
graceful_timeout = int(os.environ.get("MIRROR_WEB_GRACEFUL_TIMEOUT", "10"))
keepalive = 75
accesslog = "-" if os.environ.get("MIRROR_ACCESS_LOG", "true").lower() in ("1", "true", "yes", "on") else None
errorlog = "-"
loglevel = os.environ.get("MIRROR_LOG_LEVEL", "info").lower()
wsgi_app = "mirrorsite.wsgi:application"

certfile = os.environ.get("REGISTRY_HTTP_TLS_CERTIFICATE") or None
keyfile = os.environ.get("REGISTRY_HTTP_TLS_KEY") or None
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
