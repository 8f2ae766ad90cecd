"""Upstreams and accounts as code: the YAML file MIRROR_UPSTREAMS names, applied at start-up.

    upstreams:
      - url: https://ghcr.io
        name: ghcr                 # default: from the URL's host
        hosts: [ghcr.io]           # default: the URL's host (Docker Hub: docker.io and its aliases)
        alias: ghcr                # /v2/ghcr/<repository>/... selects it
        tag_ttl: 300               # seconds; default MIRROR_TAG_TTL
        stale_policy: serve        # or never
        max_staleness: 86400       # seconds; default MIRROR_TAG_MAX_STALENESS
        allow: ["myorg/*"]         # repository patterns (as the upstream names them)
        deny: []
        realm_hosts: []            # other hosts whose token realm gets the credentials (HTTPS);
                                   # default: auth.docker.io for Docker Hub, none otherwise
        tls_verify: true
        ca_bundle: /etc/mirror/ghcr-ca.pem
        connect_timeout: 5
        read_timeout: 60
        max_connections: 16
        library_prefix: false      # default: true for Docker Hub only
        accounts:                  # used in this order
          - username: bot
            password_env: GHCR_TOKEN     # or password_file: /run/secrets/x, or password: ...
          - anonymous: true

Upstreams are matched by URL. What the file says is written again at every start (the admin
shows those records read-only); accounts it no longer lists are deleted, upstreams it no
longer lists are kept and handed to the admin. An entry with the URL of
REGISTRY_PROXY_REMOTEURL configures the default upstream; REGISTRY_PROXY_USERNAME's account
stays first in line there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import logging
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.text import slugify
import yaml

from registry import secrets
from registry.models import HOST_RE, REALM_HOST_RE, Managed, Upstream, UpstreamAccount, default_hosts, is_docker_hub
from registry.upstreams import accounts, routing

logger = logging.getLogger(__name__)

UPSTREAM_KEYS = {
    "url",
    "name",
    "hosts",
    "alias",
    "tag_ttl",
    "stale_policy",
    "max_staleness",
    "allow",
    "deny",
    "realm_hosts",
    "tls_verify",
    "ca_bundle",
    "ca_certificates",
    "connect_timeout",
    "read_timeout",
    "max_connections",
    "library_prefix",
    "accounts",
}
ACCOUNT_KEYS = {"username", "anonymous", "password", "password_env", "password_file", "enabled"}


class ConfigError(ValueError):
    """The file cannot be applied; the message says where and why."""


@dataclass
class AccountSpec:
    username: str
    password: str = field(repr=False, default="")
    enabled: bool = True


@dataclass
class UpstreamSpec:
    fields: dict[str, Any]
    accounts: list[AccountSpec]


def load(path: str | os.PathLike) -> list[UpstreamSpec]:
    try:
        document = yaml.safe_load(Path(path).read_text())
    except OSError as error:
        raise ConfigError(f"{path}: {error.strerror or error}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(document, dict) or not isinstance(document.get("upstreams"), list):
        raise ConfigError(f"{path}: expected a mapping with an `upstreams` list")
    unknown = set(document) - {"upstreams"}
    if unknown:
        raise ConfigError(f"{path}: unknown keys {sorted(unknown)}")
    specs = [_upstream(entry, f"{path}: upstreams[{i}]") for i, entry in enumerate(document["upstreams"])]
    urls = [spec.fields["url"] for spec in specs]
    duplicates = sorted({url for url in urls if urls.count(url) > 1})
    if duplicates:
        raise ConfigError(f"{path}: the same URL twice: {', '.join(duplicates)}")
    return specs


def _upstream(entry: object, where: str) -> UpstreamSpec:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected a mapping")
    unknown = set(entry) - UPSTREAM_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
    url = _typed(entry, "url", str, where, required=True).rstrip("/")
    if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
        raise ConfigError(f"{where}: url must be http(s)://host[:port]")
    hosts = [host.lower() for host in _list(entry, "hosts", where)]
    bad = [host for host in hosts if not HOST_RE.match(host)]
    if bad:
        raise ConfigError(f"{where}: hosts: not a registry host name: {', '.join(bad)}")
    realm_hosts = [host.lower().rstrip(".") for host in _list(entry, "realm_hosts", where)]
    bad = [host for host in realm_hosts if not REALM_HOST_RE.match(host)]
    if bad:
        raise ConfigError(f"{where}: realm_hosts: not a host name (no scheme, port or path): {', '.join(bad)}")
    library = entry.get("library_prefix", "auto")
    fields: dict[str, Any] = {
        "url": url,
        "name": _typed(entry, "name", str, where) or slugify(urlsplit(url).netloc.replace(".", "-").replace(":", "-")),
        "hosts": ", ".join(hosts or default_hosts(url)),
        "alias": _typed(entry, "alias", str, where) or "",
        "library_prefix": is_docker_hub(url) if library == "auto" else _typed(entry, "library_prefix", bool, where),
        "tag_ttl": _typed(entry, "tag_ttl", int, where),
        "stale_policy": _typed(entry, "stale_policy", str, where) or Upstream.StalePolicy.SERVE,
        "max_staleness": _typed(entry, "max_staleness", int, where),
        "allow_repositories": "\n".join(_list(entry, "allow", where)),
        "deny_repositories": "\n".join(_list(entry, "deny", where)),
        "realm_hosts": ", ".join(realm_hosts),
        "tls_verify": _typed(entry, "tls_verify", bool, where, default=True),
        "ca_certificates": _ca(entry, where),
        "connect_timeout": _number(entry, "connect_timeout", where),
        "read_timeout": _number(entry, "read_timeout", where),
        "max_connections": _typed(entry, "max_connections", int, where),
    }
    raw_accounts = entry.get("accounts", [])
    if not isinstance(raw_accounts, list):
        raise ConfigError(f"{where}: accounts must be a list")
    specs = [_account(account, f"{where}.accounts[{i}]") for i, account in enumerate(raw_accounts)]
    names = [spec.username for spec in specs]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: an account is listed twice")
    return UpstreamSpec(fields, specs)


def _account(entry: object, where: str) -> AccountSpec:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected a mapping")
    unknown = set(entry) - ACCOUNT_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
    anonymous = _typed(entry, "anonymous", bool, where, default=False)
    username = _typed(entry, "username", str, where) or ""
    if anonymous == bool(username):
        raise ConfigError(f"{where}: give a username, or anonymous: true")
    sources = [key for key in ("password", "password_env", "password_file") if key in entry]
    if len(sources) > 1 or (anonymous and sources):
        raise ConfigError(f"{where}: at most one of password, password_env, password_file (none for anonymous)")
    password = ""
    if sources == ["password"]:
        password = _typed(entry, "password", str, where)
    elif sources == ["password_env"]:
        variable = _typed(entry, "password_env", str, where)
        if variable not in os.environ:
            raise ConfigError(f"{where}: the environment variable {variable} is not set")
        password = os.environ[variable]
    elif sources == ["password_file"]:
        try:
            password = Path(_typed(entry, "password_file", str, where)).read_text().strip()
        except OSError as error:
            raise ConfigError(f"{where}: password_file: {error.strerror or error}") from None
    return AccountSpec(username, password, _typed(entry, "enabled", bool, where, default=True))


def _typed(entry: dict, key: str, kind: type, where: str, *, required: bool = False, default: Any = None) -> Any:
    if key not in entry or entry[key] is None:
        if required:
            raise ConfigError(f"{where}: {key} is required")
        return default
    value = entry[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: {key} must be a {kind.__name__}")
    if kind is int and value < 0:
        raise ConfigError(f"{where}: {key} must not be negative")
    return value


def _number(entry: dict, key: str, where: str) -> float | None:
    value = entry.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"{where}: {key} must be a positive number of seconds")
    return float(value)


def _list(entry: dict, key: str, where: str) -> list[str]:
    value = entry.get(key)
    if value is None:
        return []
    if isinstance(value, str):
        value = [item.strip() for item in value.split(",")]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigError(f"{where}: {key} must be a list of strings")
    return [item for item in value if item]


def _ca(entry: dict, where: str) -> str:
    if "ca_bundle" in entry and "ca_certificates" in entry:
        raise ConfigError(f"{where}: give ca_bundle (a file) or ca_certificates (PEM), not both")
    if "ca_bundle" in entry:
        try:
            pem = Path(_typed(entry, "ca_bundle", str, where)).read_text()
        except OSError as error:
            raise ConfigError(f"{where}: ca_bundle: {error.strerror or error}") from None
    else:
        pem = _typed(entry, "ca_certificates", str, where) or ""
    if pem and "-----BEGIN CERTIFICATE-----" not in pem:
        raise ConfigError(f"{where}: the CA bundle holds no PEM certificate")
    return pem.strip()


# --- applying it -----------------------------------------------------------------------------
def apply(specs: list[UpstreamSpec]) -> list[Upstream]:
    """Write the file's upstreams and accounts; all or nothing."""
    applied = []
    with transaction.atomic():
        for spec in specs:
            applied.append(_apply_upstream(spec))
        listed = [upstream.pk for upstream in applied]
        for gone in Upstream.objects.filter(managed_by=Managed.FILE).exclude(pk__in=listed):
            logger.warning("upstream %s is no longer in MIRROR_UPSTREAMS: kept, now managed in the admin", gone.name)
            Upstream.objects.filter(pk=gone.pk).update(managed_by=Managed.ADMIN)
            UpstreamAccount.objects.filter(upstream=gone, managed_by=Managed.FILE).update(managed_by=Managed.ADMIN)
    routing.forget()
    for upstream in applied:
        accounts.forget(upstream)
    return applied


def _apply_upstream(spec: UpstreamSpec) -> Upstream:
    fields = spec.fields
    upstream = Upstream.objects.filter(url=fields["url"]).first() or Upstream(url=fields["url"])
    for key, value in fields.items():
        setattr(upstream, key, value)
    upstream.managed_by = Managed.FILE
    try:
        upstream.full_clean(exclude=["active_account"])
    except ValidationError as error:
        raise ConfigError(f"upstream {fields['url']}: {_messages(error)}") from None
    upstream.save()
    kept = []
    for position, spec_account in enumerate(spec.accounts, start=1):
        account = UpstreamAccount.objects.filter(upstream=upstream, username=spec_account.username).first()
        if account is None:
            account = UpstreamAccount(upstream=upstream, username=spec_account.username)
        account.managed_by, account.position, account.enabled = Managed.FILE, position, spec_account.enabled
        if secrets.decrypt_or_none(account.secret) != spec_account.password:
            account.set_secret(spec_account.password)
        account.save()
        kept.append(account.pk)
    UpstreamAccount.objects.filter(upstream=upstream, managed_by=Managed.FILE).exclude(pk__in=kept).delete()
    return upstream


def _messages(error: ValidationError) -> str:
    if hasattr(error, "message_dict"):
        return "; ".join(f"{key}: {' '.join(values)}" for key, values in error.message_dict.items())
    return " ".join(error.messages)


def apply_file(path: str | os.PathLike) -> list[Upstream]:
    """Load and apply MIRROR_UPSTREAMS (ConfigError when it cannot be)."""
    return apply(load(path))
