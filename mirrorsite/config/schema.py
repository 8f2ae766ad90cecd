"""Every environment variable the mirror reads, declared once: its name (the field's), type,
default and description. Django's settings (mirrorsite/settings.py) and gunicorn's
(mirrorsite/gunicorn_conf.py) read them from here, and the manual's settings table
(docs/configuration.md) is generated from here (`python -m mirrorsite.config --write-docs`).

Fields are in the manual's order; a derived default reads only fields declared above it.
"""

from __future__ import annotations

from collections.abc import Mapping
import dataclasses
from pathlib import Path
from typing import Any

from mirrorsite.config.fields import Derived, setting

PROJECT_DIR = Path(__file__).resolve().parent.parent.parent
# django-environ's db_url: Django's DATABASES entry for the URL (ENGINE, NAME, OPTIONS...).
DatabaseConfig = Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Settings:
    # --- Where the embedded default keeps its state, and where blobs live ---------------------
    MIRROR_DATA_DIR: Path = setting(
        PROJECT_DIR / "data",
        """Where the database (SQLite), blobs, temporary files and generated secret key live.
        Created if missing.""",
        shown="`data/` in the project directory",
    )
    MIRROR_STORAGE: str = setting(
        "filesystem",
        """Where blobs live: `filesystem` (under `MIRROR_DATA_DIR/blobs/`) or `s3` (an
        S3-compatible bucket; fills still stage their bytes in `MIRROR_DATA_DIR/tmp/`). See
        "Object storage (S3)".""",
        case="lower",
    )
    MIRROR_S3_BUCKET: str = setting(
        "", "The bucket, with `MIRROR_STORAGE=s3`. It must exist; the mirror never creates it."
    )
    MIRROR_S3_ENDPOINT_URL: str = setting(
        "", "The S3-compatible service (MinIO, Ceph, R2…), e.g. `http://minio:9000`.", shown="empty (AWS)"
    )
    MIRROR_S3_REGION: str = setting("us-east-1", "The bucket's region (signs requests and presigned URLs).")
    MIRROR_S3_ACCESS_KEY_ID: str = setting(
        "",
        """Credentials (with `MIRROR_S3_SECRET_ACCESS_KEY`); empty: boto3's default chain (`AWS_*`
        variables, profile, instance or task role).""",
    )
    MIRROR_S3_SECRET_ACCESS_KEY: str = setting("", "The secret of `MIRROR_S3_ACCESS_KEY_ID`.")
    MIRROR_S3_PREFIX: str = setting(
        "",
        """Path inside the bucket under which `blobs/` lives (e.g. `mirror`), so one bucket can
        hold several mirrors or other data.""",
    )
    MIRROR_S3_SERVE: str = setting(
        "redirect",
        """How cache hits are served: `redirect` (307 to a presigned GET of the object; the bytes
        skip the mirror) or `stream` (the mirror reads the object and sends it, for clients that
        cannot reach the bucket).""",
        case="lower",
    )
    MIRROR_S3_PRESIGN_SECONDS: int = setting(
        600, "Lifetime of a presigned URL: the client must start its download within it."
    )
    MIRROR_S3_PART_SIZE: int = setting(
        16 * 1024 * 1024,
        """Part size of the multipart uploads fills make, at least 5 MiB (S3's minimum). A blob
        whose size would need more than 10,000 parts is sent in larger ones.""",
        shown="`16777216` (16 MiB)",
    )
    MIRROR_S3_ADDRESSING_STYLE: str = setting(
        "auto",
        """`path` (bucket in the URL path, which MinIO and most S3-compatible services want),
        `virtual` (bucket in the host name) or `auto`.""",
        case="lower",
    )
    MIRROR_S3_CONNECT_TIMEOUT: float = setting(5.0, "Seconds to connect to the bucket's service.")
    MIRROR_S3_READ_TIMEOUT: float = setting(
        15.0,
        """Seconds to wait for each answer of the bucket's service (or for it to take more of an
        upload). A request is tried at most twice: a bucket that stops answering fails a request
        with `503 UNAVAILABLE` after about twice the sum of the two timeouts.""",
    )

    # --- Django ---------------------------------------------------------------------------------
    DJANGO_SECRET_KEY: str = setting(
        "",
        """Django's secret key (signs admin sessions). Required in a deployment (`DATABASE_URL`
        other than SQLite, `REDIS_URL` or `CELERY_BROKER_URL` set): without it the mirror refuses
        to start (see [Hardening](security.md#hardening)).""",
        shown="generated once into `MIRROR_DATA_DIR/secret_key`",
    )
    DJANGO_DEBUG: bool = setting(False, "Django debug mode. Never in production.")
    DJANGO_ALLOWED_HOSTS: tuple[str, ...] = setting(
        ("*",),
        "Comma-separated host names the mirror answers to. A mirror is reached under many names, hence any.",
    )
    DATABASE_URL: DatabaseConfig = setting(
        Derived(lambda read: f"sqlite:///{read['MIRROR_DATA_DIR'] / 'db.sqlite3'}"),
        """Metadata database, e.g. `postgres://user:password@host:5432/mirrorsite` (what several
        replicas share, see [Running at scale](scaling.md#running-at-scale)). SQLite runs in WAL
        mode with a 30 s busy timeout so the server processes can share the file. Query
        parameters set Django's connection options, e.g.
        `?conn_max_age=60&conn_health_checks=true` to keep PostgreSQL connections open between
        requests. PostgreSQL connections give up connecting after 5 s (`?connect_timeout=` to
        change it) and use TCP keepalives (a dead peer is noticed within about a minute).""",
        shown="`sqlite:///MIRROR_DATA_DIR/db.sqlite3`",
    )
    MIRROR_DATABASE_STATEMENT_TIMEOUT: float = setting(
        60.0,
        """PostgreSQL: seconds a statement may run before the server cancels it (`0`: no limit).
        Sent as the connection's `options`; set `0` behind a pooler that refuses startup options
        (PgBouncer), or for a migration known to take longer.""",
    )

    # --- The web server (`manage.py serve`, gunicorn) -------------------------------------------
    REGISTRY_HTTP_ADDR: str = setting("0.0.0.0:5000", "Address and port the server listens on.")
    MIRROR_WEB_WORKERS: int = setting(2, "gunicorn worker processes.")
    MIRROR_WEB_WORKER_CLASS: str = setting(
        "mirrorsite.gunicorn_worker.MirrorWorker",
        'gunicorn worker class; only for comparisons (see "Why gunicorn with threads").',
        shown="the mirror's gthread worker",
    )
    MIRROR_WEB_THREADS: int = setting(
        32, "Threads per worker; workers × threads is the number of requests served at once."
    )
    MIRROR_CLIENT_HEADER_TIMEOUT: float = setting(
        5.0,
        """Seconds a client has to send a request's line and headers (from its connection, or
        from the first byte of the next request on a kept-alive one); then the connection is
        closed. Read by the server's event loop: a slow client holds no thread meanwhile. See
        [Hardening](security.md#hardening).""",
    )
    MIRROR_CONNECTIONS_PER_ADDRESS: int = setting(
        64,
        """Connections one client address may hold open to one worker process (`0`: no cap);
        connections beyond it are closed as they are accepted. Trusted proxies
        (`MIRROR_TRUSTED_PROXIES`) are not capped (they carry many clients). Raise it for many
        clients behind one NAT address.""",
    )
    REGISTRY_HTTP_TLS_CERTIFICATE: str = setting(
        "",
        """PEM certificate (chain): with `REGISTRY_HTTP_TLS_KEY`, the mirror serves HTTPS itself on
        `REGISTRY_HTTP_ADDR`, as Distribution does. Clients then verify it (`--src-cert-dir` with
        a `ca.crt` for skopeo, `/etc/docker/certs.d/<host:port>/ca.crt` for Docker). Cache hits
        then go through Python rather than `sendfile`; nginx in front keeps them zero-copy.""",
    )
    REGISTRY_HTTP_TLS_KEY: str = setting(
        "", "The PEM key of `REGISTRY_HTTP_TLS_CERTIFICATE`: set both or neither (else the server refuses to start)."
    )
    MIRROR_X_ACCEL_REDIRECT: str = setting(
        "",
        """Behind nginx: the internal location mapped to `MIRROR_DATA_DIR/blobs/` (e.g.
        `/_mirror_blobs/`); cache hits are then handed to nginx (X-Accel-Redirect), which sends
        the file. See "Behind nginx". Filesystem store only: with `MIRROR_STORAGE=s3` hits go by
        `MIRROR_S3_SERVE`.""",
    )
    MIRROR_WEB_GRACEFUL_TIMEOUT: int = setting(10, "Seconds in-flight requests get to finish on shutdown.")
    MIRROR_ACCESS_LOG: bool = setting(True, "gunicorn access log on standard output.")
    MIRROR_LOG_LEVEL: str = setting(
        "INFO",
        "Log level of the application and of gunicorn: `DEBUG`, `INFO`, `WARNING`, `ERROR`.",
        case="upper",
    )

    # --- The default upstream (Distribution's names, so a registry:2 command line carries over) --
    REGISTRY_PROXY_REMOTEURL: str = setting(
        "https://registry-1.docker.io", "The default upstream: the one served at the root of `/v2/`."
    )
    REGISTRY_PROXY_USERNAME: str = setting("", "The default upstream's first account.", shown="empty (anonymous)")
    REGISTRY_PROXY_PASSWORD: str = setting(
        "",
        """Its password. For Docker Hub use an access token (read-only is enough), not the account
        password. Stored encrypted (see `MIRROR_SECRET_KEY`), never shown or logged.""",
    )
    MIRROR_UPSTREAM_HOSTS: tuple[str, ...] = setting(
        (),
        """Comma-separated registry host names the default upstream answers for: containerd's
        `?ns=` and `/v2/<host>/...` paths select it by them.""",
        shown="the URL's host; for Docker Hub `docker.io` and its other names",
    )

    # --- Several upstreams and their accounts ---------------------------------------------------
    MIRROR_UPSTREAMS: str = setting(
        "",
        """A YAML file of further upstreams and accounts, applied at every start (see "Several
        upstreams and accounts"). A file that cannot be applied stops the start with the
        reason.""",
    )
    MIRROR_SECRET_KEY: str = setting(
        "",
        """Account secrets are encrypted at rest (Fernet) with a key derived from this. Keep it
        outside `MIRROR_DATA_DIR`, so a copy of the database alone reveals no secret.""",
        shown="`DJANGO_SECRET_KEY` (or the generated one)",
    )
    MIRROR_SECRET_KEY_FALLBACKS: tuple[str, ...] = setting(
        (), "Comma-separated previous keys that still decrypt: rotate by moving the old key here."
    )
    MIRROR_ACCOUNT_RATELIMIT_RESERVE: int = setting(
        5,
        """An account the upstream says has this many pulls left or fewer (its
        `ratelimit-remaining`) hands over to the next account that has more.""",
    )
    MIRROR_ACCOUNT_COOLDOWN: int = setting(
        600, "Seconds an account answered 429 is left aside when the upstream sends no `Retry-After`."
    )
    MIRROR_ACCOUNT_VERIFY_INTERVAL: int = setting(
        3600,
        """Seconds between verifications of every account (a token fetched); they also run at
        start-up. `0`: at start-up only.""",
    )
    MIRROR_UPSTREAM_MAX_CONNECTIONS: int = setting(
        64,
        """Connections each server process may have open to one upstream (an upstream's own limit
        wins); requests beyond it wait for one.""",
    )
    MIRROR_NEGATIVE_CACHE_TTL: int = setting(
        30,
        """Seconds an upstream 404 for a tag or repository is remembered (answered again without
        asking). `0` turns it off.""",
    )
    MIRROR_UPSTREAM_LIBRARY_PREFIX: str = setting(
        "auto",
        """Whether a one-component name means `library/<name>`. `auto`: when the upstream host is
        Docker Hub (`registry-1.docker.io`, `index.docker.io`, `docker.io`,
        `registry.hub.docker.com`); otherwise a boolean.""",
    )
    MIRROR_UPSTREAM_CONNECT_TIMEOUT: float = setting(
        5.0,
        """Seconds to connect to an upstream (an upstream's own setting wins). Connection failures
        are retried twice.""",
    )
    MIRROR_UPSTREAM_READ_TIMEOUT: float = setting(
        60.0, "Seconds an upstream may go silent during a response (an upstream's own setting wins)."
    )

    # --- Cache behaviour ------------------------------------------------------------------------
    MIRROR_TAG_TTL: int = setting(
        60,
        """Seconds a tag's digest is trusted before an upstream `HEAD` revalidates it (an
        upstream's own setting wins). `0` revalidates on every pull.""",
    )
    MIRROR_TAG_MAX_STALENESS: int = setting(
        30 * 24 * 3600,
        """How long after its last successful revalidation a cached tag may still be served when
        the upstream is unreachable, failing, rate-limiting or refusing every account (an
        upstream's own setting wins).""",
        shown="`2592000` (30 days)",
    )
    MIRROR_MANIFEST_MEMORY_BYTES: int = setting(
        64 * 1024 * 1024,
        """Memory each server process may use to keep hot manifests: by digest for up to 5
        minutes (or until space runs short), by tag for what is left of the tag's TTL. `0` turns
        it off.""",
        shown="`67108864` (64 MiB)",
    )
    MIRROR_BLOB_MAX_BYTES: int = setting(
        16 * 1024 * 1024 * 1024,
        """Most bytes a blob fill may download when no cached manifest of its repository gives
        the blob's size (when one does, that size is the exact cap).""",
        shown="`17179869184` (16 GiB)",
    )
    MIRROR_TAG_LIST_MAX_BYTES: int = setting(
        1024 * 1024,
        """An upstream tag list larger than this (JSON bytes) is refused with `502 SIZE_INVALID`,
        not read whole.""",
        shown="`1048576` (1 MiB)",
    )
    MIRROR_TAG_LIST_TTL: int = setting(
        30, "Seconds each server process reuses an upstream's answer for one tag-list page. `0`: ask every time."
    )
    MIRROR_TAG_PAGE_MAX: int = setting(
        1000,
        """Most entries in one `tags/list` or `_catalog` page; a larger `n` gets this many and a
        `Link` to the rest.""",
    )
    MIRROR_FILL_TIMEOUT: int = setting(
        3600,
        """Longest a blob fill may run, including after its client disconnected; clients
        following a fill wait at most this long.""",
    )
    MIRROR_LOCK_TTL: float = setting(
        120.0,
        """With `REDIS_URL`: seconds a single-flight lock (a blob fill, a tag revalidation)
        outlives a replica that died holding it; then another replica takes the work over. A live
        owner renews its lock every quarter of this.""",
    )
    MIRROR_PULL_TIME_FLUSH_INTERVAL: int = setting(
        60,
        """Seconds between the writes of each process's buffered last-pulled times, tag pull counts
        and upstream account use (by its flush thread, and as it stops; never by a request). `0`:
        the flush thread writes them as soon as they are recorded.""",
    )

    # --- Redis and Celery -----------------------------------------------------------------------
    REDIS_URL: str = setting(
        "",
        """Redis. When set, single-flight locks live there (so replicas coordinate), upstream
        tokens are shared there (one token per account and repository for all replicas, stored
        encrypted, gone when it expires), it is the default Celery broker and statistics store.
        While it is unavailable the mirror serves on without it (see [When a dependency
        fails](operations.md#when-a-dependency-fails)).""",
    )
    MIRROR_REDIS_TIMEOUT: float = setting(
        2.0,
        """Seconds every Redis client (locks, upstream tokens, statistics, login counts, the
        Celery broker) waits to connect and for each answer; a timeout is never retried. A Redis
        that failed is then not asked for 5 s (one request probes it again).""",
    )
    CELERY_BROKER_URL: str = setting(
        Derived(lambda read: read["REDIS_URL"]),
        """Celery broker. When neither is set, a broker that needs no server: files under
        `MIRROR_DATA_DIR/broker/`.""",
        shown="`REDIS_URL`",
    )
    MIRROR_EMBEDDED_WORKERS: str = setting(
        "auto",
        """Whether `manage.py serve` (`make run`) also runs a Celery worker and the beat scheduler.
        `auto`: when neither `REDIS_URL` nor `CELERY_BROKER_URL` is set, on a broker that needs no
        server (files under `MIRROR_DATA_DIR/broker/`), since a configured broker has workers of
        its own; otherwise a boolean.""",
        case="lower",
    )
    MIRROR_WORKER_CONCURRENCY: int = setting(2, "Worker processes of the embedded Celery worker.")
    MIRROR_REDIS_KEY_PREFIX: str = setting(
        "",
        """Prefix of every key the mirror writes in Redis (broker, locks, tokens, statistics), so
        several mirrors (or test runs) can share one Redis. Replicas of one mirror use the
        same.""",
    )

    # --- Garbage collection ---------------------------------------------------------------------
    MIRROR_CACHE_TTL: int = setting(
        7 * 24 * 3600,
        "Garbage collection evicts images not pulled for this many seconds. `0` keeps them however old. Pinned images stay.",
        shown="`604800` (7 days)",
    )
    MIRROR_CACHE_MAX_BYTES: int = setting(
        0,
        """Size quota of the blob store. When it holds more than `MIRROR_CACHE_HIGH_WATERMARK` ×
        this, garbage collection evicts the least recently pulled images until it holds at most
        `MIRROR_CACHE_LOW_WATERMARK` × this.""",
        shown="`0` (no quota)",
    )
    MIRROR_CACHE_HIGH_WATERMARK: float = setting(0.9, "See `MIRROR_CACHE_MAX_BYTES`.")
    MIRROR_CACHE_LOW_WATERMARK: float = setting(0.8, "See `MIRROR_CACHE_MAX_BYTES`.")
    MIRROR_GC_GRACE_PERIOD: int = setting(
        3600,
        """Seconds during which nothing pulled or written is deleted, whatever the policies say: a
        client that got a manifest finds its blobs. Keep it well above
        `MIRROR_PULL_TIME_FLUSH_INTERVAL` (pull times are buffered).""",
    )
    MIRROR_GC_TEMP_FILE_AGE: int = setting(
        Derived(lambda read: read["MIRROR_FILL_TIMEOUT"] + 300),
        """A fill's temporary file (`tmp/*.partial`) untouched this many seconds belongs to a fill
        that died (a live fill writes as bytes arrive, and gives up after `MIRROR_FILL_TIMEOUT`),
        and is deleted.""",
        shown="`MIRROR_FILL_TIMEOUT` + 300",
    )
    MIRROR_GC_INTERVAL: int = setting(
        3600, "Seconds between scheduled garbage collections; `0` unschedules them (`manage.py gc` still works)."
    )

    # --- Popular tags and prefetch --------------------------------------------------------------
    MIRROR_POPULAR_TAGS: int = setting(
        20,
        """How many of the most pulled tags the refresh keeps fresh (revalidated, and re-fetched
        when they moved).""",
    )
    MIRROR_POPULAR_DAYS: int = setting(7, "Over how many days (today included) pulls are counted for that.")
    MIRROR_POPULAR_BUDGET: int = setting(
        20, "Upstream manifest GETs (what Docker Hub counts as pulls) one refresh may spend."
    )
    MIRROR_POPULAR_INTERVAL: int = setting(900, "Seconds between refreshes of popular tags; `0` unschedules them.")
    MIRROR_PREFETCH_RATELIMIT_RESERVE: int = setting(
        10,
        """Prefetches and refreshes stop when the upstream says no usable account has more than
        this many pulls left: the rest is for clients.""",
    )
    MIRROR_PREFETCH_ATTEMPTS: int = setting(
        5, "Tries of each upstream request of a prefetch while the upstream is unavailable or answers 429."
    )
    MIRROR_PREFETCH_BACKOFF: float = setting(2.0, "Seconds before the second try, doubled for each further one.")
    MIRROR_PREFETCH_BACKOFF_MAX: float = setting(
        120.0, "Longest wait between tries; a 429's `Retry-After` is honoured up to it."
    )
    MIRROR_PREFETCH_STALLED_AFTER: int = setting(
        900,
        """A queued or running prefetch without progress for this many seconds lost its worker
        (stopped or killed): it is sent again and resumes with what is still missing. Checked
        every third of it.""",
    )

    # --- Statistics and monitoring --------------------------------------------------------------
    MIRROR_STATS_FLUSH_INTERVAL: int = setting(
        30,
        """Seconds between flushes of each process's statistics (to Redis or the database), and of
        the scheduled `dashboard.flush_stats`; a crash loses at most this much. `0`: processes
        flush only as they stop (the scheduled task then runs every minute).""",
    )
    MIRROR_STATS_REDIS_URL: str = setting(
        Derived(lambda read: read["REDIS_URL"]),
        """Redis the processes share their statistics through (a scheduled task moves them into
        the database); empty: each process writes its own into the database.""",
        shown="`REDIS_URL`",
    )
    MIRROR_STATS_HOURLY_DAYS: int = setting(
        8, "Days hourly statistics are kept before they are rolled up into daily ones."
    )
    MIRROR_STATS_DAILY_DAYS: int = setting(400, "Days daily statistics are kept.")
    MIRROR_METRICS_TOKEN: str = setting(
        "",
        """When set, `/metrics` wants `Authorization: Bearer <this>` from every client, and
        `/readyz` answers a client presenting it from anywhere.""",
    )
    MIRROR_MONITORING_NETWORKS: tuple[str, ...] = setting(
        (),
        """Comma-separated CIDRs of the clients that may read `/readyz` and (without a token)
        `/metrics` (upstream URLs, accounts' figures); others get `403`. `/healthz` stays
        open.""",
        shown="`MIRROR_ALLOWED_NETWORKS`, else loopback and the private ranges",
    )

    # --- Who may reach the mirror, and pull what ------------------------------------------------
    MIRROR_TRUSTED_PROXIES: tuple[str, ...] = setting(
        (),
        """Comma-separated CIDRs of proxies (a TLS front, a load balancer) whose `X-Forwarded-For`
        (and `X-Forwarded-Proto`) is believed. The client's address is the right-most entry that
        is not a trusted proxy; a malformed header gives no address, which no allow-list
        admits.""",
    )
    MIRROR_ALLOWED_NETWORKS: tuple[str, ...] = setting(
        (),
        """Comma-separated CIDRs of the clients that may use the mirror, judged on the client's
        real address. Others get `403` on everything (`DENIED` on `/v2/`) except `/healthz`. See
        [Security](security.md).""",
        shown="empty (everyone)",
    )
    MIRROR_AUTH: bool = setting(
        False,
        """Client authentication on `/v2/`: Bearer challenges and the mirror's own token endpoint
        `/v2/token`, as Docker Hub does it. Off by default: the Docker daemon sends no
        credentials to a registry mirror.""",
    )
    MIRROR_AUTH_REALM: str = setting(
        "",
        """The token endpoint the challenges name. Set it when clients reach the mirror under an
        address it cannot see (behind a front that rewrites `Host`).""",
        shown="`/v2/token` on the scheme and host the client used",
    )
    MIRROR_AUTH_SERVICE: str = setting("mirrorsite", "The challenge's `service`, and the audience of the tokens.")
    MIRROR_AUTH_TOKEN_LIFETIME: int = setting(
        300, "Seconds a token from `/v2/token` is valid; clients fetch a new one when it expires."
    )
    MIRROR_AUTH_TOKEN_KEY: str = setting(
        "",
        """Tokens are signed (HS256) with a key derived from this. Changing it invalidates every
        token out there (clients simply fetch new ones). Several web processes or replicas must
        share it.""",
        shown="`DJANGO_SECRET_KEY` (or the generated one)",
    )
    MIRROR_AUTH_BASIC: bool = setting(
        True,
        """Also accept HTTP Basic (a username with its password or API token) directly on `/v2/`,
        for clients that skip the token dance.""",
    )
    MIRROR_AUTH_MAX_SCOPES: int = setting(
        10,
        """Scopes one `/v2/token` request may name (a pull names one or two); more get `400
        invalid_request`.""",
    )
    MIRROR_ACCESS_DEFAULT_POLICY: str = setting(
        "public",
        """Who may pull a repository no access rule matches: `public` (anyone the networks admit,
        except repositories private upstream) or `authenticated`.""",
    )
    MIRROR_VISIBILITY_TTL: int = setting(
        3600,
        """Seconds a repository's recorded visibility upstream (whether anonymous clients may pull
        it there) is trusted before the upstream is asked again.""",
    )

    # --- Audit log ------------------------------------------------------------------------------
    MIRROR_AUDIT_ENABLED: bool = setting(
        True, "Record every manifest request in the [audit log](security.md#audit-log)."
    )
    MIRROR_AUDIT_BLOBS: bool = setting(
        False,
        """Also record every blob request (`GET` and `HEAD`) in the audit log, one row per layer
        read (off by default, as it multiplies the rows).""",
    )
    MIRROR_AUDIT_FLUSH_INTERVAL: int = setting(
        10,
        """Seconds between the writes of each process's buffered audit records (one batch each); a
        crash loses at most this much. `0`: only as the process stops.""",
    )
    MIRROR_AUDIT_BUFFER_MAX: int = setting(
        100_000,
        """Unsaved audit records a process keeps while the database is unavailable; past it, new
        ones are dropped and the drop is logged.""",
    )
    MIRROR_AUDIT_RETENTION_DAYS: int = setting(
        90, "Audit records older than this are deleted daily (`audit.prune`); `0` keeps them forever."
    )

    # --- Hardening ------------------------------------------------------------------------------
    MIRROR_HTTPS: bool = setting(
        Derived(lambda read: bool(read["REGISTRY_HTTP_TLS_CERTIFICATE"])),
        """The mirror is reached over HTTPS (serving it itself, or behind a TLS-terminating
        proxy): the admin's cookies are then sent over HTTPS only and HSTS is sent.""",
        shown="`true` when `REGISTRY_HTTP_TLS_CERTIFICATE` is set",
    )
    MIRROR_PROXY_SSL_HEADER: str = setting(
        "",
        """Behind a TLS proxy: the header it sets to `https` (e.g. `X-Forwarded-Proto`), so the
        mirror knows a request came over HTTPS. Set it only if the proxy always sets or removes
        that header; empty: no header is believed (a client could send it).""",
    )
    MIRROR_HSTS_SECONDS: int = setting(
        365 * 24 * 3600,
        "`Strict-Transport-Security` max-age sent on HTTPS answers when `MIRROR_HTTPS`; `0`: none.",
    )
    MIRROR_ADMIN_LOGIN_ATTEMPTS: int = setting(
        5, "The former name of `MIRROR_LOGIN_ATTEMPTS`, still read (the new name wins)."
    )
    MIRROR_ADMIN_LOGIN_LOCKOUT: int = setting(
        900, "The former name of `MIRROR_LOGIN_LOCKOUT`, still read (the new name wins)."
    )
    MIRROR_LOGIN_ATTEMPTS: int = setting(
        Derived(lambda read: read["MIRROR_ADMIN_LOGIN_ATTEMPTS"]),
        """Password checks one user name may fail (on `/v2/`, `/v2/token` and the admin login
        alike) before further checks are refused with `429` for `MIRROR_LOGIN_LOCKOUT` seconds;
        `0`: no limit. Counted in Redis when `REDIS_URL` is set (shared by every replica), else
        (or while Redis is down) in the database. See [Password
        guessing](security.md#password-guessing).""",
        shown="`MIRROR_ADMIN_LOGIN_ATTEMPTS` (`5`)",
    )
    MIRROR_LOGIN_ATTEMPTS_PER_ADDRESS: int = setting(
        20,
        """The same per client address (an IPv6 client by its /64), whatever user names it tries;
        API tokens count here. `0`: no limit.""",
    )
    MIRROR_LOGIN_LOCKOUT: int = setting(
        Derived(lambda read: read["MIRROR_ADMIN_LOGIN_LOCKOUT"]),
        "Seconds a count lasts, from the last counted attempt.",
        shown="`MIRROR_ADMIN_LOGIN_LOCKOUT` (`900`)",
    )
    MIRROR_API_ANONYMOUS_RATE: str = setting(
        "60/minute",
        """REST API throttle per anonymous client address (a DRF rate); past it `429` with
        `Retry-After`. Shared through Redis with `REDIS_URL`.""",
    )
    MIRROR_API_USER_RATE: str = setting(
        "1200/minute", "REST API throttle per user (a DRF rate), as `MIRROR_API_ANONYMOUS_RATE`."
    )
