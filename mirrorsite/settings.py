"""Mirrorsite settings: every knob is an environment variable, declared in the schema
(mirrorsite/config/schema.py: type, default, description) and read once by its loader.

Each setting of the schema is a Django setting of the same name (settings.MIRROR_TAG_TTL), but
DJANGO_* and DATABASE_URL, which become Django's own (SECRET_KEY, DEBUG, ALLOWED_HOSTS,
DATABASES). The embedded default (no environment at all) is a complete mirror of Docker Hub
that keeps everything (SQLite database, blobs, temporary files, generated secret key) under
MIRROR_DATA_DIR. docs/configuration.md lists every variable (generated from the schema).
"""

import copy
import dataclasses
import os
from pathlib import Path
import secrets

from mirrorsite.config import load

BASE_DIR = Path(__file__).resolve().parent.parent

config = load()
# Lists as Django and the apps always had them; the rest as the schema typed it.
globals().update(
    {
        name: list(value) if isinstance(value, tuple) else value
        for name, value in ((field.name, getattr(config, field.name)) for field in dataclasses.fields(config))
        if not name.startswith("DJANGO_") and name != "DATABASE_URL"
    }
)

# --- Where the embedded default keeps its state -------------------------------------------
MIRROR_DATA_DIR = config.MIRROR_DATA_DIR
MIRROR_DATA_DIR.mkdir(parents=True, exist_ok=True)


def _embedded_secret_key() -> str:
    """A key generated once per data directory, so sessions survive restarts."""
    path = MIRROR_DATA_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


# Set below (Hardening): a deployment must be given one, the embedded default generates it.
SECRET_KEY = config.DJANGO_SECRET_KEY
DEBUG = config.DJANGO_DEBUG
# A mirror is reached under many host names (IPs, DNS aliases, load balancers).
ALLOWED_HOSTS = list(config.DJANGO_ALLOWED_HOSTS)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "registry",
    "dashboard",
    "access",
    "audit",
]

MIDDLEWARE = [
    "registry.api.responses.RegistryHeadersMiddleware",  # nosniff and a sandboxing CSP on every /v2/ answer
    "django.middleware.security.SecurityMiddleware",
    "access.middleware.AllowedNetworksMiddleware",  # before anything else answers
    "mirrorsite.nulguard.RejectNulMiddleware",  # PostgreSQL cannot compare such strings
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "mirrorsite.urls"
WSGI_APPLICATION = "mirrorsite.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database ------------------------------------------------------------------------------
DATABASES = {"default": copy.deepcopy(dict(config.DATABASE_URL))}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Tests run fills in threads beside the test: a file (not shared-cache memory) lets
    # them use the same WAL and busy-timeout rules as production.
    DATABASES["default"]["TEST"] = {"NAME": str(MIRROR_DATA_DIR / f"test-db-{os.getpid()}.sqlite3")}
    # Several server processes share the file: WAL lets readers run beside one writer,
    # IMMEDIATE transactions and a busy timeout turn lock contention into waiting, not errors.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A server that does not answer fails a request (and /readyz) in seconds, not at TCP's pace:
    # connecting (each request connects: no persistent connections) gives up after
    # connect_timeout; TCP keepalives notice a server whose machine or network went away.
    _postgres = DATABASES["default"].setdefault("OPTIONS", {})
    _postgres.setdefault("connect_timeout", 5)
    for _name, _value in (
        ("keepalives", 1),
        ("keepalives_idle", 30),
        ("keepalives_interval", 10),
        ("keepalives_count", 3),
    ):
        _postgres.setdefault(_name, _value)
    if config.MIRROR_DATABASE_STATEMENT_TIMEOUT > 0 and "options" not in _postgres:
        # The server cancels a statement running longer (a lock wait, a runaway query).
        _postgres["options"] = f"-c statement_timeout={int(config.MIRROR_DATABASE_STATEMENT_TIMEOUT * 1000)}"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# Serve the admin's assets straight from the installed apps: no collectstatic step to forget.
STATIC_ROOT = None
WHITENOISE_USE_FINDERS = True

# --- Logging ---------------------------------------------------------------------------------
LOG_LEVEL = config.MIRROR_LOG_LEVEL
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django": {"handlers": ["console"], "level": "WARNING", "propagate": False},
        # 404s and 405s are everyday registry answers, not warnings.
        "django.request": {"handlers": ["console"], "level": "ERROR", "propagate": False},
    },
}

# --- Who may reach the mirror -----------------------------------------------------------------
# Who may pull what: the policy registry's /v2/ views ask (registry/api/policy.py); access's
# rules, requesters and upstream visibility, composed in here.
MIRROR_ACCESS_POLICY = "access.authorization.RulesPolicy"

# --- Celery (workers for prefetch, refresh of popular tags, garbage collection) ----------------
CELERY_TASK_IGNORE_RESULT = True
MIRROR_BROKER_CONFIGURED = bool(config.CELERY_BROKER_URL)
if not MIRROR_BROKER_CONFIGURED:
    # No Redis: messages are files under MIRROR_DATA_DIR, a broker that needs no server.
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT = "mirrorsite.broker:Transport"
    CELERY_BROKER_TRANSPORT_OPTIONS = {"root": str(MIRROR_DATA_DIR / "broker"), "polling_interval": 0.5}
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {}
    if config.CELERY_BROKER_URL.split(":", 1)[0] in ("redis", "rediss", "unix"):
        # Publishing a task never hangs on a Redis that stopped answering. Reads get more than
        # kombu's 1 s BRPOP poll, or an idle worker would time out its own wait.
        CELERY_BROKER_TRANSPORT_OPTIONS.update(
            socket_connect_timeout=config.MIRROR_REDIS_TIMEOUT, socket_timeout=max(config.MIRROR_REDIS_TIMEOUT, 5.0)
        )
        CELERY_BROKER_CONNECTION_TIMEOUT = config.MIRROR_REDIS_TIMEOUT
    if config.MIRROR_REDIS_KEY_PREFIX:
        CELERY_BROKER_TRANSPORT_OPTIONS["global_keyprefix"] = config.MIRROR_REDIS_KEY_PREFIX
CELERY_WORKER_PREFETCH_MULTIPLIER = 1  # prefetches are long: let idle workers take the next one
CELERY_WORKER_HIJACK_ROOT_LOGGER = False  # keep the LOGGING above
CELERY_BEAT_SCHEDULE_FILENAME = str(MIRROR_DATA_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE = {
    name: {"task": task, "schedule": float(interval)}
    for name, task, interval in (
        ("garbage-collection", "registry.collect_garbage", config.MIRROR_GC_INTERVAL),
        ("refresh-popular-tags", "registry.refresh_popular", config.MIRROR_POPULAR_INTERVAL),
        ("resume-stalled-prefetches", "registry.resume_stalled_prefetches", config.MIRROR_PREFETCH_STALLED_AFTER / 3),
        ("verify-upstream-accounts", "registry.verify_accounts", config.MIRROR_ACCOUNT_VERIFY_INTERVAL),
    )
    if interval > 0
}

# --- Statistics, dashboard and the REST API ---------------------------------------------------
INSTALLED_APPS += ["rest_framework.authtoken", "drf_spectacular", "drf_spectacular_sidecar"]
REST_FRAMEWORK = {
    # Token first: an anonymous call is told (401, WWW-Authenticate) how to authenticate.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # API tokens, counted by the password-guessing limiter (access/attempts.py).
        "access.apiauth.LimitedTokenAuthentication",
        # The session of an admin login (itself limited: mirrorsite/adminlogin.py).
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["dashboard.api.permissions.StaffReadsPermittedWrites"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # Requests per client (anonymous: per address; else per user), 429 with Retry-After past them.
    "DEFAULT_THROTTLE_CLASSES": ["access.apiauth.AnonymousApiThrottle", "access.apiauth.UserApiThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "anon": config.MIRROR_API_ANONYMOUS_RATE,
        "user": config.MIRROR_API_USER_RATE,
    },
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Mirrorsite API",
    "DESCRIPTION": "Statistics, the cache, prefetch jobs, pins, eviction and upstream accounts of the mirror.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["dashboard.api.permissions.StaffReadsPermittedWrites"],  # the schema too: staff only
    # Swagger UI's files come with the project (drf-spectacular-sidecar): no CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}
# What processes sent to Redis is moved into the database on this schedule (each minute when
# processes flush only as they stop); without Redis each process writes its own. Hourly
# buckets are rolled up every hour.
if config.MIRROR_STATS_REDIS_URL:
    CELERY_BEAT_SCHEDULE["flush-statistics"] = {
        "task": "dashboard.flush_stats",
        "schedule": float(config.MIRROR_STATS_FLUSH_INTERVAL or 60),
    }
CELERY_BEAT_SCHEDULE["roll-up-statistics"] = {"task": "dashboard.roll_up_stats", "schedule": 3600.0}

# --- Audit log: who pulled what, from where, when ---------------------------------------------
if config.MIRROR_AUDIT_RETENTION_DAYS > 0:
    CELERY_BEAT_SCHEDULE["prune-audit-log"] = {"task": "audit.prune", "schedule": 24 * 3600.0}

# --- Hardening: secure defaults for a production run -----------------------------------------
# A deployment (a database other than SQLite, or Redis, or a broker: processes and machines
# that share state) needs one secret key shared by all of them: refuse to start without it.
# The embedded default (`make run`) generates its key once under MIRROR_DATA_DIR.
MIRROR_DEPLOYMENT = DATABASES["default"]["ENGINE"] != "django.db.backends.sqlite3" or bool(
    config.REDIS_URL or MIRROR_BROKER_CONFIGURED
)
if not SECRET_KEY:
    if MIRROR_DEPLOYMENT:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY must be set: with DATABASE_URL (other than SQLite), REDIS_URL or "
            "CELERY_BROKER_URL this is a deployment, whose processes must share one secret key. Generate "
            "one with: python3 -c 'import secrets; print(secrets.token_urlsafe(50))'"
        )
    SECRET_KEY = _embedded_secret_key()
if config.MIRROR_PROXY_SSL_HEADER:
    SECURE_PROXY_SSL_HEADER = ("HTTP_" + config.MIRROR_PROXY_SSL_HEADER.upper().replace("-", "_"), "https")
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = config.MIRROR_HTTPS
SESSION_COOKIE_HTTPONLY = CSRF_COOKIE_HTTPONLY = True  # no script reads them (forms carry the CSRF token)
SESSION_COOKIE_SAMESITE = CSRF_COOKIE_SAMESITE = "Lax"
SECURE_HSTS_SECONDS = config.MIRROR_HSTS_SECONDS if config.MIRROR_HTTPS else 0
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# No redirect of HTTP to HTTPS (`check --deploy` asks for one): registry clients configured for
# the plain-HTTP port must keep working; serve HTTPS on its own address or behind a proxy.
# HSTS for subdomains and the browsers' preload list are the domain owner's decision, not the mirror's.
SILENCED_SYSTEM_CHECKS = ["security.W008", "security.W005", "security.W021"]
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    # The REST API's throttles (access/apiauth.py): shared through Redis when configured.
    "api-throttle": (
        {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": config.REDIS_URL,
            "KEY_PREFIX": config.MIRROR_REDIS_KEY_PREFIX + "api-throttle",
            # The timeouts of every Redis client (registry/redisclients.py): an API call never hangs.
            "OPTIONS": {
                "socket_timeout": config.MIRROR_REDIS_TIMEOUT,
                "socket_connect_timeout": config.MIRROR_REDIS_TIMEOUT,
            },
        }
        if config.REDIS_URL
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "api-throttle"}
    ),
}
# The API's schema documents the error answers of every operation too (fuzzed against it).
SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"] = [
    "drf_spectacular.hooks.postprocess_schema_enums",
    "dashboard.api.errorschema.document_error_answers",
]
