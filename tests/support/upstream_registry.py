"""A real upstream registry (Debian's Distribution 2.8 binary) for end-to-end tests.

The registry runs as a subprocess on 127.0.0.1:<ephemeral port> with token auth
delegated to `TokenServer`. It can be stopped and started again on the same port
with the same storage, so tests can prove the mirror serves from its cache while
the upstream is down.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import NamedTuple

import requests
import yaml

from .token_server import TokenServer

REGISTRY_BIN = "/usr/bin/docker-registry"

# Ports of services that may run on a developer's box; never grab them.
_RESERVED_PORTS = {5432, 6379, 5672, 3306, 1883, 4222}


class AccessEntry(NamedTuple):
    method: str
    path: str  # request path without the query string


class LoggedRequest(NamedTuple):
    method: str
    path: str
    uri: str  # path plus query string, as Distribution logged it
    status: int | None
    request_id: str | None


def free_port() -> int:
    """Ask the kernel for a free loopback port (bind to port 0)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _RESERVED_PORTS:
            return port


# --- log parsing ---------------------------------------------------------------
# What Distribution 2.8.2 prints per request (checked against the binary):
#  * stdout, from the access logger wrapping the whole app, exactly one Apache
#    combined-format line per request, whatever the outcome:
#      127.0.0.1 - - [29/Nov/2026:02:16:36 +0000] "GET /v2/ HTTP/1.1" 200 2 "" "curl/7.88.1"
#  * stderr, logrus lines tagged with http.request.id/method/uri:
#    msg="response completed" (2xx/3xx) or msg="response completed with error"
#    (4xx/5xx from a handler), preceded by extra lines for the same request
#    ("authorized request", "error parsing digest=..."). Requests rejected by
#    auth (401) get only msg="error authorizing context: ..." and NO
#    "response completed" line, so counting those lines would miss them.
#    logrus quotes a value only when needed: http.request.uri=/v2/ but
#    http.request.uri="/v2/x?y=1".
# Hence the Apache lines are the source of truth (one per request, 401s
# included). If there are none (access log disabled), fall back to logrus lines
# grouped by http.request.id, so every request is still counted once.
_LOGFMT_PAIR = re.compile(r'([A-Za-z0-9_.\-]+)=("(?:[^"\\]|\\.)*"|\S*)')
_COMBINED = re.compile(r'^\S+ \S+ \S+ \[[^\]]+\] "([A-Z]+) (\S+) [^"]*" (\d{3}) ')


def _unquote(v: str) -> str:
    if len(v) >= 2 and v[0] == '"' and v[-1] == '"':
        # logrus quotes with Go's %q; request URIs only ever contain \" or \\ escapes
        return re.sub(r"\\(.)", r"\1", v[1:-1])
    return v


def parse_logfmt(line: str) -> dict[str, str]:
    return {m.group(1): _unquote(m.group(2)) for m in _LOGFMT_PAIR.finditer(line)}


def parse_access_log(lines: list[str]) -> list[LoggedRequest]:
    """Turn Distribution log lines into one LoggedRequest per HTTP request, in order."""
    combined: list[LoggedRequest] = []
    by_id: dict[str, LoggedRequest] = {}  # insertion order = first line of each request
    for line in lines:
        m = _COMBINED.match(line)
        if m:
            uri = m.group(2)
            combined.append(LoggedRequest(m.group(1), uri.split("?", 1)[0], uri, int(m.group(3)), None))
            continue
        if not line.startswith("time=") or "http.request.id=" not in line:
            continue
        kv = parse_logfmt(line)
        rid, method, uri = kv.get("http.request.id"), kv.get("http.request.method"), kv.get("http.request.uri")
        if not rid or not method or uri is None:
            continue
        status = kv.get("http.response.status")
        if status is None and kv.get("msg", "").startswith("error authorizing context"):
            status = "401"
        prev = by_id.get(rid)
        if prev is None or (prev.status is None and status):
            by_id[rid] = LoggedRequest(
                method, uri.split("?", 1)[0], uri, int(status) if status and status.isdigit() else None, rid
            )
    return combined if combined else list(by_id.values())


class UpstreamRegistry:
    """Distribution subprocess with token auth on 127.0.0.1.

    `username`/`password` is a test account known to `token_server` (created there
    if missing).
    """

    def __init__(
        self,
        token_server: TokenServer,
        *,
        username: str = "mirror-bot",
        password: str = "mirror-bot-password",
        service: str = "upstream-registry",
        port: int | None = None,
        workdir: str | None = None,
        binary: str = REGISTRY_BIN,
        log_level: str = "info",
    ) -> None:
        self.token_server = token_server
        self.username = username
        self.password = password
        token_server.users.setdefault(username, password)
        self.service = service
        self.port = port or free_port()
        self._own_workdir = workdir is None
        # Short path: keeps unix-socket-ish limits and error messages readable.
        self.workdir = workdir or tempfile.mkdtemp(prefix="mup-", dir="/tmp")
        self.storage_dir = os.path.join(self.workdir, "storage")
        self.config_path = os.path.join(self.workdir, "config.yml")
        self.log_path = os.path.join(self.workdir, "registry.log")
        self.binary = binary
        self.log_level = log_level
        self._proc: subprocess.Popen | None = None
        self._log_file = None
        os.makedirs(self.storage_dir, exist_ok=True)
        self._write_config()

    # ------------------------------------------------------------------ config
    def config(self) -> dict:
        """Distribution's configuration: filesystem storage, token auth against our server."""
        return {
            "version": 0.1,
            "log": {"level": self.log_level, "formatter": "text", "accesslog": {"disabled": False}},
            "storage": {
                "filesystem": {"rootdirectory": self.storage_dir},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {"addr": self.host, "secret": "mirrorsite-e2e-http-secret"},
            "auth": {
                "token": {
                    "realm": self.token_server.realm,
                    "service": self.service,
                    "issuer": self.token_server.issuer,
                    "rootcertbundle": str(self.token_server.ca_cert_path),
                }
            },
        }

    def _write_config(self) -> None:
        with open(self.config_path, "w") as f:
            yaml.safe_dump(self.config(), f)

    # ------------------------------------------------------------------ addresses
    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def creds(self) -> str:
        """`user:password`, as skopeo's --creds wants it."""
        return f"{self.username}:{self.password}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout: float = 20.0) -> UpstreamRegistry:
        if self.running:
            return self
        if not os.access(self.binary, os.X_OK):
            raise RuntimeError(f"{self.binary} not found; install Debian's docker-registry package")
        # The token server's URL is baked into the config; rewrite in case it restarted.
        self._write_config()
        # Append so log marks stay valid across stop()/start().
        self._log_file = open(self.log_path, "ab")
        self._proc = subprocess.Popen(
            [self.binary, "serve", self.config_path],
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": self.workdir},
        )
        deadline = time.monotonic() + timeout
        last_err: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._close_log()
                raise RuntimeError(f"docker-registry exited with {self._proc.returncode}:\n{self.log_tail()}")
            try:
                r = requests.get(f"{self.url}/v2/", timeout=1)
                if r.status_code in (200, 401):
                    return self
            except requests.RequestException as e:  # not listening yet
                last_err = e
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"docker-registry did not come up on {self.host}: {last_err}\n{self.log_tail()}")

    def stop(self, timeout: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout)
        self._close_log()
        # Wait until the port is really closed so "upstream down" tests are deterministic.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.settimeout(0.2)
                if s.connect_ex(("127.0.0.1", self.port)) != 0:
                    break
            time.sleep(0.05)

    def restart(self) -> UpstreamRegistry:
        self.stop()
        return self.start()

    def cleanup(self) -> None:
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> UpstreamRegistry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    # ------------------------------------------------------------------ auth helpers
    def token(self, repository: str, actions: str = "pull,push", *, anonymous: bool = False) -> str:
        """Fetch a token from the token server over HTTP (counts as a token request)."""
        r = requests.get(
            self.token_server.realm,
            params={"service": self.service, "scope": f"repository:{repository}:{actions}"},
            auth=None if anonymous else (self.username, self.password),
            timeout=10,
        )
        r.raise_for_status()
        return r.json()["token"]

    def push_token(self, repository: str) -> str:
        """A pull+push token for `repository` minted without HTTP (doesn't touch the counter)."""
        return self.token_server.token_for(self.username, self.service, [f"repository:{repository}:pull,push"])

    def auth_headers(self, repository: str, actions: str = "pull,push") -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.token_server.token_for(self.username, self.service, [f'repository:{repository}:{actions}'])}"
        }

    # ------------------------------------------------------------------ logs
    def _read_lines(self) -> list[str]:
        try:
            with open(self.log_path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return []
        # Ignore a trailing partial line: it may still be being written.
        end = data.rfind(b"\n")
        return data[: end + 1].decode("utf-8", "replace").splitlines() if end >= 0 else []

    def _settle(self, quiet: float = 0.15, timeout: float = 3.0) -> None:
        """Wait until the log stops growing: Distribution logs a request just after answering it."""
        if not self.running:
            return
        deadline = time.monotonic() + timeout
        last = -1
        stable_since = time.monotonic()
        while time.monotonic() < deadline:
            try:
                size = os.path.getsize(self.log_path)
            except FileNotFoundError:
                size = 0
            now = time.monotonic()
            if size != last:
                last, stable_since = size, now
            elif now - stable_since >= quiet:
                return
            time.sleep(0.03)

    def requests_log(self, since: int = 0, *, settle: bool = True) -> list[LoggedRequest]:
        """Every HTTP request Distribution handled (in order), from index `since`."""
        if settle:
            self._settle()
        return parse_access_log(self._read_lines())[since:]

    def access_log(self, since: int = 0, *, settle: bool = True) -> list[AccessEntry]:
        """[(method, path)] of requests handled, from the mark `since` (see log_mark())."""
        return [AccessEntry(r.method, r.path) for r in self.requests_log(since, settle=settle)]

    def log_mark(self) -> int:
        """Index to pass as `since=` to only see requests made after this call."""
        return len(self.requests_log())

    def blob_gets(self, digest: str, since: int = 0) -> int:
        """Number of GET /v2/<any repo>/blobs/<digest> requests since the mark that got past
        authentication (a 401 challenge transfers nothing; its retry with a token is counted)."""
        suffix = f"/blobs/{digest}"
        return sum(
            1
            for r in self.requests_log(since)
            if r.method == "GET" and r.path.startswith("/v2/") and r.path.endswith(suffix) and r.status != 401
        )

    def manifest_gets(self, reference: str, repository: str | None = None, since: int = 0, method: str = "GET") -> int:
        """Number of `method` requests for manifests/<reference> (tag or digest) since the mark."""
        n = 0
        for m, p in self.access_log(since):
            if m != method or not p.startswith("/v2/"):
                continue
            repo, sep, ref = p[len("/v2/") :].rpartition("/manifests/")
            if sep and ref == reference and (repository is None or repo == repository):
                n += 1
        return n

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self._read_lines()[-n:])
