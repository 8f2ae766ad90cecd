"""A Docker-Hub-style token server for end-to-end tests.

Distribution's `auth: token` mode hands clients a Bearer challenge pointing at a
realm; the client fetches a JWT there and presents it to the registry. This
server plays that realm. It mints a throwaway CA plus a signing certificate
issued by it; Distribution trusts the CA (`rootcertbundle`) and verifies each
token through the `x5c` header chain [signing cert, CA cert].
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass, field
import datetime as dt
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import json
import os
import tempfile
import threading
from urllib.parse import parse_qs, urlsplit
import uuid

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
import jwt


@dataclass(frozen=True)
class TokenRequest:
    """One request the server answered (kept so tests can assert on caching)."""

    user: str | None  # None = anonymous
    service: str | None
    scopes: tuple[str, ...]
    status: int
    access: tuple[dict, ...] = ()


@dataclass
class _Grant:
    type: str
    name: str
    actions: list[str] = field(default_factory=list)


def _b64der(cert: x509.Certificate) -> str:
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode("ascii")


def _make_ca_and_signer(common_name: str) -> tuple[x509.Certificate, x509.Certificate, rsa.RSAPrivateKey]:
    """Create a self-signed CA and a leaf signing cert it issued (both valid for a day)."""
    now = dt.datetime.now(dt.UTC)
    # Backdate a little: Distribution verifies the chain with the current clock.
    not_before = now - dt.timedelta(hours=1)
    not_after = now + dt.timedelta(days=1)

    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{common_name} test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    signer_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{common_name} token signer")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return ca_cert, signer_cert, key


def parse_scope(scope: str) -> _Grant | None:
    """Parse `type:name:action,action`; the name may itself contain ':' (host:port/repo)."""
    try:
        rtype, rest = scope.split(":", 1)
        name, actions = rest.rsplit(":", 1)
    except ValueError:
        return None
    if not rtype or not name:
        return None
    return _Grant(rtype, name, [a for a in actions.split(",") if a])


class TokenServer:
    """Threaded token endpoint on 127.0.0.1 (ephemeral port).

    `users` maps username -> password. Authenticated users get every action they
    ask for; anonymous callers get only `pull` on repositories that are not in
    `private_repositories`. A wrong password (or unknown user) is a 401.
    """

    def __init__(
        self,
        *,
        users: dict[str, str] | None = None,
        private_repositories: Iterable[str] = (),
        issuer: str = "mirrorsite-test-issuer",
        expires_in: int = 300,
        workdir: str | None = None,
    ) -> None:
        self.users: dict[str, str] = dict(users or {})
        self.private_repositories: set[str] = set(private_repositories)
        self.issuer = issuer
        self.expires_in = expires_in
        self._own_workdir = workdir is None
        self.workdir = workdir or tempfile.mkdtemp(prefix="mts-", dir="/tmp")
        self.ca_cert, self.signer_cert, self._key = _make_ca_and_signer(issuer)
        self.ca_cert_path = os.path.join(self.workdir, "token-ca.pem")
        with open(self.ca_cert_path, "wb") as f:
            f.write(self.ca_cert.public_bytes(serialization.Encoding.PEM))
        self._lock = threading.Lock()
        self._requests: list[TokenRequest] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> TokenServer:
        if self._httpd is not None:
            return self
        handler = _make_handler(self)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="token-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> TokenServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "token server not started"
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def realm(self) -> str:
        return f"{self.url}/token"

    # ------------------------------------------------------------------ counters
    @property
    def request_count(self) -> int:
        """Number of token requests served (any outcome)."""
        with self._lock:
            return len(self._requests)

    @property
    def requests(self) -> list[TokenRequest]:
        with self._lock:
            return list(self._requests)

    def reset_counter(self) -> None:
        with self._lock:
            self._requests.clear()

    def _record(self, req: TokenRequest) -> None:
        with self._lock:
            self._requests.append(req)

    # ------------------------------------------------------------------ tokens
    def authorize(self, user: str | None, scopes: Iterable[str]) -> list[dict]:
        """Return the `access` claim granted to `user` (None = anonymous) for `scopes`."""
        granted: dict[tuple[str, str], list[str]] = {}
        for scope in scopes:
            grant = parse_scope(scope)
            if grant is None:
                continue
            if user is not None:
                actions = grant.actions
            elif grant.type == "repository" and grant.name not in self.private_repositories:
                actions = [a for a in grant.actions if a == "pull"]
            else:
                actions = []
            key = (grant.type, grant.name)
            merged = granted.setdefault(key, [])
            for a in actions:
                if a not in merged:
                    merged.append(a)
        # Keep entries even with no actions: Distribution then answers 401/denied itself.
        return [{"type": t, "name": n, "actions": a} for (t, n), a in granted.items()]

    def issue_token(
        self,
        *,
        service: str,
        access: list[dict],
        subject: str = "",
        expires_in: int | None = None,
    ) -> tuple[str, int, dt.datetime]:
        """Mint a signed RS256 JWT. Returns (token, expires_in, issued_at)."""
        lifetime = self.expires_in if expires_in is None else expires_in
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        iat = int(now.timestamp())
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": service,  # Distribution 2.8 wants a plain string here
            "exp": iat + lifetime,
            "nbf": iat - 1,
            "iat": iat,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        headers = {"x5c": [_b64der(self.signer_cert), _b64der(self.ca_cert)]}
        token = jwt.encode(claims, self._key, algorithm="RS256", headers=headers)
        return token, lifetime, now

    def token_for(self, user: str | None, service: str, scopes: Iterable[str]) -> str:
        """Mint a token directly (no HTTP, not counted) – handy for test setup."""
        return self.issue_token(service=service, access=self.authorize(user, scopes), subject=user or "")[0]

    def check_basic(self, header: str | None) -> tuple[bool, str | None]:
        """Validate an Authorization header. Returns (ok, user); no header → (True, None)."""
        if not header:
            return True, None
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return True, None  # bearer etc. is treated as anonymous, like Docker Hub
        try:
            raw = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False, None
        user, sep, password = raw.partition(":")
        if not sep or self.users.get(user) != password:
            return False, None
        return True, user

    def cleanup(self) -> None:
        self.stop()
        if self._own_workdir:
            import shutil

            shutil.rmtree(self.workdir, ignore_errors=True)


def _make_handler(server: TokenServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # keep pytest output quiet
            pass

        def _json(self, status: int, body: dict, extra: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def _serve(self, service: str | None, scopes: list[str], user: str | None, ok: bool, oauth: bool) -> None:
            if not ok:
                server._record(TokenRequest(user=None, service=service, scopes=tuple(scopes), status=401))
                self._json(
                    401,
                    {"details": "incorrect username or password"},
                    {"WWW-Authenticate": f'Basic realm="{server.realm}"'},
                )
                return
            access = server.authorize(user, scopes)
            token, lifetime, issued = server.issue_token(service=service or "", access=access, subject=user or "")
            server._record(
                TokenRequest(user=user, service=service, scopes=tuple(scopes), status=200, access=tuple(access))
            )
            body: dict = {
                "token": token,
                "access_token": token,
                "expires_in": lifetime,
                "issued_at": issued.isoformat().replace("+00:00", "Z"),
            }
            if oauth:
                body["scope"] = " ".join(scopes)
            self._json(200, body)

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            if parts.path.rstrip("/") != "/token":
                self._json(404, {"details": "not found"})
                return
            q = parse_qs(parts.query, keep_blank_values=True)
            service = (q.get("service") or [None])[0]
            # Clients may send several `scope` params, or several scopes space-separated in one.
            scopes = [s for v in q.get("scope", []) for s in v.split(" ") if s]
            ok, user = server.check_basic(self.headers.get("Authorization"))
            self._serve(service, scopes, user, ok, oauth=False)

        def do_POST(self) -> None:
            # OAuth2 "password" grant, as Docker Hub also offers on the same realm.
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            form = parse_qs(self.rfile.read(length).decode("utf-8", "replace"), keep_blank_values=True)
            if parts.path.rstrip("/") != "/token":
                self._json(404, {"details": "not found"})
                return
            service = (form.get("service") or [None])[0]
            scopes = [s for v in form.get("scope", []) for s in v.split(" ") if s]
            username = (form.get("username") or [None])[0]
            password = (form.get("password") or [None])[0]
            if username is not None:
                ok = server.users.get(username) == password
                user: str | None = username if ok else None
            else:
                ok, user = server.check_basic(self.headers.get("Authorization"))
            self._serve(service, scopes, user, ok, oauth=True)

    return Handler
