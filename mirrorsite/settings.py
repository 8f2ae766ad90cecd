"""Mirrorsite settings: every knob is an environment variable, read here and only here.

The embedded default (no environment at all) is a complete mirror of Docker Hub that keeps
everything (SQLite database, blobs, temporary files, generated secret key) under
MIRROR_DATA_DIR. docs/configuration.md lists every variable.
"""

import os
from pathlib import Path
import secrets

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()

# --- Where the embedded default keeps its state -------------------------------------------
MIRROR_DATA_DIR = Path(env.str("MIRROR_DATA_DIR", default=str(BASE_DIR / "data"))).resolve()
MIRROR_DATA_DIR.mkdir(parents=True, exist_ok=True)


def _embedded_secret_key() -> str:
    """A key generated once per data directory, so sessions survive restarts."""
    path = MIRROR_DATA_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


# Set below (Hardening): a deployment must be given one, the embedded default generates it.
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="")
DEBUG = env.bool("DJANGO_DEBUG", default=False)
# A mirror is reached under many host names (IPs, DNS aliases, load balancers).
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["*"])

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
# PostgreSQL: seconds a statement may run before the server cancels it (0 = no limit). Sent as a
# connection option; set 0 behind a pooler that refuses startup options (PgBouncer).
MIRROR_DATABASE_STATEMENT_TIMEOUT = env.float("MIRROR_DATABASE_STATEMENT_TIMEOUT", default=60.0)
DATABASES = {"default": env.db_url("DATABASE_URL", default=f"sqlite:///{MIRROR_DATA_DIR / 'db.sqlite3'}")}
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
    if MIRROR_DATABASE_STATEMENT_TIMEOUT > 0 and "options" not in _postgres:
        # The server cancels a statement running longer (a lock wait, a runaway query).
        _postgres["options"] = f"-c statement_timeout={int(MIRROR_DATABASE_STATEMENT_TIMEOUT * 1000)}"
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

# --- The web server (`manage.py serve`) -----------------------------------------------------
REGISTRY_HTTP_ADDR = env.str("REGISTRY_HTTP_ADDR", default="0.0.0.0:5000")
MIRROR_WEB_WORKERS = env.int("MIRROR_WEB_WORKERS", default=2)
MIRROR_WEB_THREADS = env.int("MIRROR_WEB_THREADS", default=32)
# Seconds a client has to send a request's line and headers; then the connection is closed
# (read by the server's event loop, so a slow client never holds a thread).
MIRROR_CLIENT_HEADER_TIMEOUT = env.float("MIRROR_CLIENT_HEADER_TIMEOUT", default=5.0)
# Connections one client address may hold open to a server process (0: no cap); trusted
# proxies are not capped (they carry many clients).
MIRROR_CONNECTIONS_PER_ADDRESS = env.int("MIRROR_CONNECTIONS_PER_ADDRESS", default=64)
# Behind nginx: the internal location that maps to MIRROR_DATA_DIR/blobs/, e.g. "/_blobs/".
# Cache hits are then answered with X-Accel-Redirect and nginx sends the file.
MIRROR_X_ACCEL_REDIRECT = env.str("MIRROR_X_ACCEL_REDIRECT", default="")

# --- The default upstream (Distribution's names, so a registry:2 command line carries over) --
REGISTRY_PROXY_REMOTEURL = env.str("REGISTRY_PROXY_REMOTEURL", default="https://registry-1.docker.io")
REGISTRY_PROXY_USERNAME = env.str("REGISTRY_PROXY_USERNAME", default="")
REGISTRY_PROXY_PASSWORD = env.str("REGISTRY_PROXY_PASSWORD", default="")
# "auto": one-component names mean library/<name> when the upstream is Docker Hub.
MIRROR_UPSTREAM_LIBRARY_PREFIX = env.str("MIRROR_UPSTREAM_LIBRARY_PREFIX", default="auto")
MIRROR_UPSTREAM_CONNECT_TIMEOUT = env.float("MIRROR_UPSTREAM_CONNECT_TIMEOUT", default=5.0)
MIRROR_UPSTREAM_READ_TIMEOUT = env.float("MIRROR_UPSTREAM_READ_TIMEOUT", default=60.0)
# Registry host names the default upstream answers for (containerd's ?ns=, host prefixes in paths).
# Empty: the URL's own host, plus docker.io and its aliases when the URL is Docker Hub's.
MIRROR_UPSTREAM_HOSTS = env.list("MIRROR_UPSTREAM_HOSTS", default=[])
# Connections each server process may hold open to one upstream (an upstream's own setting wins).
MIRROR_UPSTREAM_MAX_CONNECTIONS = env.int("MIRROR_UPSTREAM_MAX_CONNECTIONS", default=64)

# --- Several upstreams and their accounts -----------------------------------------------------
# A YAML file of upstreams and accounts, applied at start-up (configuration as code).
MIRROR_UPSTREAMS = env.str("MIRROR_UPSTREAMS", default="")
# Account secrets are encrypted at rest with a key derived from this (else from SECRET_KEY);
# old keys listed in the fallbacks still decrypt, so the key can be rotated.
MIRROR_SECRET_KEY = env.str("MIRROR_SECRET_KEY", default="")
MIRROR_SECRET_KEY_FALLBACKS = env.list("MIRROR_SECRET_KEY_FALLBACKS", default=[])
# An account with this many pulls left or fewer (its upstream's ratelimit-remaining) hands
# over to the next enabled account, if one has more.
MIRROR_ACCOUNT_RATELIMIT_RESERVE = env.int("MIRROR_ACCOUNT_RATELIMIT_RESERVE", default=5)
# How long an account answered 429 is left aside when the upstream says no Retry-After.
MIRROR_ACCOUNT_COOLDOWN = env.int("MIRROR_ACCOUNT_COOLDOWN", default=600)
# Every account is verified (a token fetched) at start-up and this often (seconds; 0 = only at start-up).
MIRROR_ACCOUNT_VERIFY_INTERVAL = env.int("MIRROR_ACCOUNT_VERIFY_INTERVAL", default=3600)
# Seconds an upstream 404 for a tag or repository is remembered (0 = not at all).
MIRROR_NEGATIVE_CACHE_TTL = env.int("MIRROR_NEGATIVE_CACHE_TTL", default=30)

# --- Cache behaviour --------------------------------------------------------------------------
# Seconds a tag's digest is trusted before an upstream HEAD revalidates it (0 = every time).
MIRROR_TAG_TTL = env.int("MIRROR_TAG_TTL", default=60)
# How old (since its last successful revalidation) a tag may be and still be served stale
# when the upstream is down or rate-limits us.
MIRROR_TAG_MAX_STALENESS = env.int("MIRROR_TAG_MAX_STALENESS", default=30 * 24 * 3600)
# Memory each server process may use to keep hot manifests (bytes; 0 turns it off).
MIRROR_MANIFEST_MEMORY_BYTES = env.int("MIRROR_MANIFEST_MEMORY_BYTES", default=64 * 1024 * 1024)
# Bytes a blob fill may download when no cached manifest of its repository gives its size (a
# descriptor's size, when known, is the exact cap).
MIRROR_BLOB_MAX_BYTES = env.int("MIRROR_BLOB_MAX_BYTES", default=16 * 1024 * 1024 * 1024)
# An upstream tag list larger than this (bytes of JSON) is refused with a 502, not read whole.
MIRROR_TAG_LIST_MAX_BYTES = env.int("MIRROR_TAG_LIST_MAX_BYTES", default=1024 * 1024)
# Seconds each server process reuses an upstream's answer for one tag-list page (0: ask every time).
MIRROR_TAG_LIST_TTL = env.int("MIRROR_TAG_LIST_TTL", default=30)
# Most entries one tag-list or catalog page carries; a larger `n` gets this many and a Link to the rest.
MIRROR_TAG_PAGE_MAX = env.int("MIRROR_TAG_PAGE_MAX", default=1000)
# Longest a blob fill may take; it goes on this long after its client disconnects.
MIRROR_FILL_TIMEOUT = env.int("MIRROR_FILL_TIMEOUT", default=3600)
# A Redis lock (single-flight of a fill or a tag revalidation) outlives an owner that died by
# at most this many seconds; a live owner renews it every quarter of this.
MIRROR_LOCK_TTL = env.float("MIRROR_LOCK_TTL", default=120.0)
# Last-pulled times are buffered in each process and written at most this often (seconds).
MIRROR_PULL_TIME_FLUSH_INTERVAL = env.int("MIRROR_PULL_TIME_FLUSH_INTERVAL", default=60)

LOG_LEVEL = env.str("MIRROR_LOG_LEVEL", default="INFO").upper()
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

# --- Blob storage: the local filesystem or an S3-compatible bucket ----------------------------
# `filesystem` (blobs under MIRROR_DATA_DIR/blobs) or `s3` (blobs in MIRROR_S3_BUCKET; fills
# still stage their bytes under MIRROR_DATA_DIR/tmp).
MIRROR_STORAGE = env.str("MIRROR_STORAGE", default="filesystem").lower()
# The bucket (it must exist; the mirror never creates one).
MIRROR_S3_BUCKET = env.str("MIRROR_S3_BUCKET", default="")
# An S3-compatible service (MinIO, Ceph, R2…); empty for AWS S3.
MIRROR_S3_ENDPOINT_URL = env.str("MIRROR_S3_ENDPOINT_URL", default="")
MIRROR_S3_REGION = env.str("MIRROR_S3_REGION", default="us-east-1")
# Empty: boto3's default credential chain (AWS_* variables, profile, instance or task role).
MIRROR_S3_ACCESS_KEY_ID = env.str("MIRROR_S3_ACCESS_KEY_ID", default="")
MIRROR_S3_SECRET_ACCESS_KEY = env.str("MIRROR_S3_SECRET_ACCESS_KEY", default="")
# Path inside the bucket under which blobs/ lives (e.g. `mirror`), so a bucket can be shared.
MIRROR_S3_PREFIX = env.str("MIRROR_S3_PREFIX", default="")
# How hits are served: `redirect` (307 to a presigned GET; bytes skip the mirror) or `stream`
# (the mirror reads the object and sends it, for clients that cannot reach the bucket).
MIRROR_S3_SERVE = env.str("MIRROR_S3_SERVE", default="redirect").lower()
# Lifetime of a presigned GET URL (seconds): long enough to start the download.
MIRROR_S3_PRESIGN_SECONDS = env.int("MIRROR_S3_PRESIGN_SECONDS", default=600)
# Multipart upload part size in bytes (at least 5 MiB; larger for a blob that needs more than 10,000).
MIRROR_S3_PART_SIZE = env.int("MIRROR_S3_PART_SIZE", default=16 * 1024 * 1024)
# `auto`, `path` (bucket in the URL path, as MinIO and most S3-compatible services want) or `virtual`.
MIRROR_S3_ADDRESSING_STYLE = env.str("MIRROR_S3_ADDRESSING_STYLE", default="auto").lower()
# Seconds to connect to the bucket's service, and to wait for each answer (or for the socket to
# take more of an upload); a request is tried at most twice, so a bucket that stops answering
# fails a request with 503 UNAVAILABLE after about twice their sum.
MIRROR_S3_CONNECT_TIMEOUT = env.float("MIRROR_S3_CONNECT_TIMEOUT", default=5.0)
MIRROR_S3_READ_TIMEOUT = env.float("MIRROR_S3_READ_TIMEOUT", default=15.0)

# --- Who may reach the mirror -----------------------------------------------------------------
# Proxies (CIDRs) whose X-Forwarded-For is believed; the real client address is taken from it.
MIRROR_TRUSTED_PROXIES = env.list("MIRROR_TRUSTED_PROXIES", default=[])
# Client networks (CIDRs) that may use the mirror; others get 403 on everything but /healthz.
# Empty: every address. Checked on the real client address (see MIRROR_TRUSTED_PROXIES).
MIRROR_ALLOWED_NETWORKS = env.list("MIRROR_ALLOWED_NETWORKS", default=[])
# Clients (CIDRs) that may read /readyz and /metrics (upstream URLs, accounts' figures). Empty:
# those of MIRROR_ALLOWED_NETWORKS, or with no allow-list, loopback and the private ranges (never
# the Internet at large). A client presenting MIRROR_METRICS_TOKEN may too.
MIRROR_MONITORING_NETWORKS = env.list("MIRROR_MONITORING_NETWORKS", default=[])
# Who may pull what: the policy registry's /v2/ views ask (registry/api/policy.py); access's
# rules, requesters and upstream visibility, composed in here.
MIRROR_ACCESS_POLICY = "access.authorization.RulesPolicy"
# Client authentication on /v2/ (token auth as Docker Hub does it). Off by default: the Docker
# daemon sends no credentials to a registry mirror.
MIRROR_AUTH = env.bool("MIRROR_AUTH", default=False)
# The token endpoint clients are sent to; empty: /v2/token on the host and scheme they used.
MIRROR_AUTH_REALM = env.str("MIRROR_AUTH_REALM", default="")
# The `service` of the challenge, and the audience of the mirror's tokens.
MIRROR_AUTH_SERVICE = env.str("MIRROR_AUTH_SERVICE", default="mirrorsite")
# Seconds a token issued by /v2/token is valid; clients fetch a new one when it expires.
MIRROR_AUTH_TOKEN_LIFETIME = env.int("MIRROR_AUTH_TOKEN_LIFETIME", default=300)
# Tokens are signed (HS256) with a key derived from this; empty: from DJANGO_SECRET_KEY.
MIRROR_AUTH_TOKEN_KEY = env.str("MIRROR_AUTH_TOKEN_KEY", default="")
# Also accept HTTP Basic (username and password, or API token) directly on /v2/.
MIRROR_AUTH_BASIC = env.bool("MIRROR_AUTH_BASIC", default=True)
# Scopes one /v2/token request may name (a pull names one or two); more: 400.
MIRROR_AUTH_MAX_SCOPES = env.int("MIRROR_AUTH_MAX_SCOPES", default=10)
# Who may pull a repository no access rule matches: "public" (anyone the networks admit; but
# never a repository the upstream serves only to the mirror's account) or "authenticated".
MIRROR_ACCESS_DEFAULT_POLICY = env.str("MIRROR_ACCESS_DEFAULT_POLICY", default="public")
# Seconds a repository's recorded visibility upstream (anonymous pull granted or not) is
# trusted before it is asked again.
MIRROR_VISIBILITY_TTL = env.int("MIRROR_VISIBILITY_TTL", default=3600)

# --- Celery (workers for prefetch, refresh and garbage collection) ---------------------------
REDIS_URL = env.str("REDIS_URL", default="")
# Seconds every Redis client (locks, token cache, statistics, login counts, the broker) waits to
# connect and for each answer; a Redis that failed is then left alone for a few seconds.
MIRROR_REDIS_TIMEOUT = env.float("MIRROR_REDIS_TIMEOUT", default=2.0)
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL)
CELERY_TASK_IGNORE_RESULT = True

# --- Workers: prefetch, refresh of popular tags, garbage collection ---------------------------
# Garbage collection: images not pulled for MIRROR_CACHE_TTL seconds are evicted (0 = never);
# with MIRROR_CACHE_MAX_BYTES set, a store above the high watermark (a fraction of it) is
# brought down to the low one, least recently pulled images first. Pinned images stay.
MIRROR_CACHE_TTL = env.int("MIRROR_CACHE_TTL", default=7 * 24 * 3600)
MIRROR_CACHE_MAX_BYTES = env.int("MIRROR_CACHE_MAX_BYTES", default=0)
MIRROR_CACHE_HIGH_WATERMARK = env.float("MIRROR_CACHE_HIGH_WATERMARK", default=0.9)
MIRROR_CACHE_LOW_WATERMARK = env.float("MIRROR_CACHE_LOW_WATERMARK", default=0.8)
# Nothing pulled or written this recently is deleted: a client that just got a manifest can
# still fetch its blobs. Must stay well above MIRROR_PULL_TIME_FLUSH_INTERVAL (times are buffered).
MIRROR_GC_GRACE_PERIOD = env.int("MIRROR_GC_GRACE_PERIOD", default=3600)
# A fill's temporary file untouched for this long belongs to a fill that died (a live fill
# writes as bytes arrive, and gives up after MIRROR_FILL_TIMEOUT anyway).
MIRROR_GC_TEMP_FILE_AGE = env.int("MIRROR_GC_TEMP_FILE_AGE", default=MIRROR_FILL_TIMEOUT + 300)
MIRROR_GC_INTERVAL = env.int("MIRROR_GC_INTERVAL", default=3600)

# Popular tags: the N most pulled over the last D days are revalidated every interval, and
# re-fetched when they moved, spending at most BUDGET upstream manifest GETs per run.
MIRROR_POPULAR_TAGS = env.int("MIRROR_POPULAR_TAGS", default=20)
MIRROR_POPULAR_DAYS = env.int("MIRROR_POPULAR_DAYS", default=7)
MIRROR_POPULAR_BUDGET = env.int("MIRROR_POPULAR_BUDGET", default=20)
MIRROR_POPULAR_INTERVAL = env.int("MIRROR_POPULAR_INTERVAL", default=900)

# Prefetch stops when the upstream account has this many pulls left or fewer, so clients keep
# the rest; transient upstream errors are retried with exponential backoff.
MIRROR_PREFETCH_RATELIMIT_RESERVE = env.int("MIRROR_PREFETCH_RATELIMIT_RESERVE", default=10)
MIRROR_PREFETCH_ATTEMPTS = env.int("MIRROR_PREFETCH_ATTEMPTS", default=5)
MIRROR_PREFETCH_BACKOFF = env.float("MIRROR_PREFETCH_BACKOFF", default=2.0)
MIRROR_PREFETCH_BACKOFF_MAX = env.float("MIRROR_PREFETCH_BACKOFF_MAX", default=120.0)
# A queued or running job without progress for this long lost its worker (stopped, killed):
# it is sent again, and resumes with what is still missing.
MIRROR_PREFETCH_STALLED_AFTER = env.int("MIRROR_PREFETCH_STALLED_AFTER", default=900)

# `manage.py serve` runs a Celery worker and beat beside the web server: "auto" does so when no
# broker is configured (the embedded default), since a configured one has workers of its own.
MIRROR_EMBEDDED_WORKERS = env.str("MIRROR_EMBEDDED_WORKERS", default="auto").lower()
MIRROR_WORKER_CONCURRENCY = env.int("MIRROR_WORKER_CONCURRENCY", default=2)
# Lets several mirrors (or test runs) share one Redis.
MIRROR_REDIS_KEY_PREFIX = env.str("MIRROR_REDIS_KEY_PREFIX", default="")

MIRROR_BROKER_CONFIGURED = bool(CELERY_BROKER_URL)
if not MIRROR_BROKER_CONFIGURED:
    # No Redis: messages are files under MIRROR_DATA_DIR, a broker that needs no server.
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT = "mirrorsite.broker:Transport"
    CELERY_BROKER_TRANSPORT_OPTIONS = {"root": str(MIRROR_DATA_DIR / "broker"), "polling_interval": 0.5}
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {}
    if CELERY_BROKER_URL.split(":", 1)[0] in ("redis", "rediss", "unix"):
        # Publishing a task never hangs on a Redis that stopped answering. Reads get more than
        # kombu's 1 s BRPOP poll, or an idle worker would time out its own wait.
        CELERY_BROKER_TRANSPORT_OPTIONS.update(
            socket_connect_timeout=MIRROR_REDIS_TIMEOUT, socket_timeout=max(MIRROR_REDIS_TIMEOUT, 5.0)
        )
        CELERY_BROKER_CONNECTION_TIMEOUT = MIRROR_REDIS_TIMEOUT
    if MIRROR_REDIS_KEY_PREFIX:
        CELERY_BROKER_TRANSPORT_OPTIONS["global_keyprefix"] = MIRROR_REDIS_KEY_PREFIX
CELERY_WORKER_PREFETCH_MULTIPLIER = 1  # prefetches are long: let idle workers take the next one
CELERY_WORKER_HIJACK_ROOT_LOGGER = False  # keep the LOGGING above
CELERY_BEAT_SCHEDULE_FILENAME = str(MIRROR_DATA_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE = {
    name: {"task": task, "schedule": float(interval)}
    for name, task, interval in (
        ("garbage-collection", "registry.collect_garbage", MIRROR_GC_INTERVAL),
        ("refresh-popular-tags", "registry.refresh_popular", MIRROR_POPULAR_INTERVAL),
        ("resume-stalled-prefetches", "registry.resume_stalled_prefetches", MIRROR_PREFETCH_STALLED_AFTER / 3),
        ("verify-upstream-accounts", "registry.verify_accounts", MIRROR_ACCOUNT_VERIFY_INTERVAL),
    )
    if interval > 0
}

# --- Statistics and dashboard ---
# Each process buffers its statistics and flushes them this often (seconds): into Redis when
# MIRROR_STATS_REDIS_URL is set (the beat task below moves them into the database), else
# straight into the database. A crash loses at most this much; 0 flushes only as a process stops.
MIRROR_STATS_FLUSH_INTERVAL = env.int("MIRROR_STATS_FLUSH_INTERVAL", default=30)
MIRROR_STATS_REDIS_URL = env.str("MIRROR_STATS_REDIS_URL", default=REDIS_URL)
# Hourly buckets are kept this many days, then rolled up into daily ones, kept for the second.
MIRROR_STATS_HOURLY_DAYS = env.int("MIRROR_STATS_HOURLY_DAYS", default=8)
MIRROR_STATS_DAILY_DAYS = env.int("MIRROR_STATS_DAILY_DAYS", default=400)
# /metrics is open (like /healthz) unless this is set: then it wants `Authorization: Bearer <token>`.
MIRROR_METRICS_TOKEN = env.str("MIRROR_METRICS_TOKEN", default="")

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
        "anon": env.str("MIRROR_API_ANONYMOUS_RATE", default="60/minute"),
        "user": env.str("MIRROR_API_USER_RATE", default="1200/minute"),
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
if MIRROR_STATS_REDIS_URL:
    CELERY_BEAT_SCHEDULE["flush-statistics"] = {
        "task": "dashboard.flush_stats",
        "schedule": float(MIRROR_STATS_FLUSH_INTERVAL or 60),
    }
CELERY_BEAT_SCHEDULE["roll-up-statistics"] = {"task": "dashboard.roll_up_stats", "schedule": 3600.0}

# --- Audit log: who pulled what, from where, when ---------------------------------------------
MIRROR_AUDIT_ENABLED = env.bool("MIRROR_AUDIT_ENABLED", default=True)
# Also record every blob request (one row per layer read): off by default, as it multiplies the rows.
MIRROR_AUDIT_BLOBS = env.bool("MIRROR_AUDIT_BLOBS", default=False)
# Records are buffered in each process and written in one batch this often (seconds; 0 = only
# as a server process stops). A crash loses at most this much.
MIRROR_AUDIT_FLUSH_INTERVAL = env.int("MIRROR_AUDIT_FLUSH_INTERVAL", default=10)
# Past this many unsaved records (the database is down), a process drops new ones, and says so.
MIRROR_AUDIT_BUFFER_MAX = env.int("MIRROR_AUDIT_BUFFER_MAX", default=100_000)
# Records older than this many days are deleted daily (0 = kept forever).
MIRROR_AUDIT_RETENTION_DAYS = env.int("MIRROR_AUDIT_RETENTION_DAYS", default=90)
if MIRROR_AUDIT_RETENTION_DAYS > 0:
    CELERY_BEAT_SCHEDULE["prune-audit-log"] = {"task": "audit.prune", "schedule": 24 * 3600.0}

# --- Hardening: secure defaults for a production run -----------------------------------------
# A deployment (a database other than SQLite, or Redis, or a broker: processes and machines
# that share state) needs one secret key shared by all of them: refuse to start without it.
# The embedded default (`make run`) generates its key once under MIRROR_DATA_DIR.
MIRROR_DEPLOYMENT = DATABASES["default"]["ENGINE"] != "django.db.backends.sqlite3" or bool(
    REDIS_URL or MIRROR_BROKER_CONFIGURED
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
# The mirror is reached over HTTPS: serving it itself (REGISTRY_HTTP_TLS_CERTIFICATE), or behind
# a TLS-terminating proxy (set this). Cookies are then sent over HTTPS only, and HSTS is on.
MIRROR_HTTPS = env.bool("MIRROR_HTTPS", default=bool(env.str("REGISTRY_HTTP_TLS_CERTIFICATE", default="")))
# Behind a TLS proxy: the header it sets to "https" on requests that came over HTTPS (e.g.
# X-Forwarded-Proto). Empty: none is believed (a client could send it). Only set it when the
# proxy always sets or strips that header.
MIRROR_PROXY_SSL_HEADER = env.str("MIRROR_PROXY_SSL_HEADER", default="")
if MIRROR_PROXY_SSL_HEADER:
    SECURE_PROXY_SSL_HEADER = ("HTTP_" + MIRROR_PROXY_SSL_HEADER.upper().replace("-", "_"), "https")
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = MIRROR_HTTPS
SESSION_COOKIE_HTTPONLY = CSRF_COOKIE_HTTPONLY = True  # no script reads them (forms carry the CSRF token)
SESSION_COOKIE_SAMESITE = CSRF_COOKIE_SAMESITE = "Lax"
# Strict-Transport-Security, sent on HTTPS answers only when MIRROR_HTTPS (0 = never).
MIRROR_HSTS_SECONDS = env.int("MIRROR_HSTS_SECONDS", default=365 * 24 * 3600)
SECURE_HSTS_SECONDS = MIRROR_HSTS_SECONDS if MIRROR_HTTPS else 0
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# No redirect of HTTP to HTTPS (`check --deploy` asks for one): registry clients configured for
# the plain-HTTP port must keep working; serve HTTPS on its own address or behind a proxy.
# HSTS for subdomains and the browsers' preload list are the domain owner's decision, not the mirror's.
SILENCED_SYSTEM_CHECKS = ["security.W008", "security.W005", "security.W021"]
# Password guessing (access/attempts.py): every password check (/v2/ Basic, /v2/token, the
# admin login, the API's tokens) is counted per user name and per client address over a window
# of MIRROR_LOGIN_LOCKOUT seconds from the last attempt; at the limit, checks are refused (429)
# before any password is hashed (0 = no limit). Counted in Redis when REDIS_URL is set (shared
# by every replica), else (or while Redis is down) in the database. MIRROR_ADMIN_LOGIN_* are
# the old names, still read.
MIRROR_ADMIN_LOGIN_ATTEMPTS = env.int("MIRROR_ADMIN_LOGIN_ATTEMPTS", default=5)
MIRROR_ADMIN_LOGIN_LOCKOUT = env.int("MIRROR_ADMIN_LOGIN_LOCKOUT", default=900)
MIRROR_LOGIN_ATTEMPTS = env.int("MIRROR_LOGIN_ATTEMPTS", default=MIRROR_ADMIN_LOGIN_ATTEMPTS)
# Per client address (an IPv6 client by its /64): several users behind one NAT share it.
MIRROR_LOGIN_ATTEMPTS_PER_ADDRESS = env.int("MIRROR_LOGIN_ATTEMPTS_PER_ADDRESS", default=20)
MIRROR_LOGIN_LOCKOUT = env.int("MIRROR_LOGIN_LOCKOUT", default=MIRROR_ADMIN_LOGIN_LOCKOUT)
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    # The REST API's throttles (access/apiauth.py): shared through Redis when configured.
    "api-throttle": (
        {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": MIRROR_REDIS_KEY_PREFIX + "api-throttle",
            # The timeouts of every Redis client (registry/redisclients.py): an API call never hangs.
            "OPTIONS": {"socket_timeout": MIRROR_REDIS_TIMEOUT, "socket_connect_timeout": MIRROR_REDIS_TIMEOUT},
        }
        if REDIS_URL
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "api-throttle"}
    ),
}
# The API's schema documents the error answers of every operation too (fuzzed against it).
SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"] = [
    "drf_spectacular.hooks.postprocess_schema_enums",
    "dashboard.api.errorschema.document_error_answers",
]
