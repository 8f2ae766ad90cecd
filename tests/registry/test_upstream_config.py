"""The MIRROR_UPSTREAMS file: parsed and checked, applied (and applied again) as code, beside
the default upstream of REGISTRY_PROXY_*."""

from __future__ import annotations

from pathlib import Path
import textwrap

import pytest

from registry.models import Managed, Upstream, UpstreamAccount
from registry.upstreams import configfile as upstreamconfig
from registry.upstreams import routing
from tests.support.tls import make_server_certificate

pytestmark = pytest.mark.django_db


@pytest.fixture
def env(settings, tmp_path, monkeypatch):
    settings.MIRROR_DATA_DIR = tmp_path
    settings.REGISTRY_PROXY_REMOTEURL = "https://registry-1.docker.io"
    settings.REGISTRY_PROXY_USERNAME = ""
    settings.REGISTRY_PROXY_PASSWORD = ""
    settings.MIRROR_UPSTREAM_HOSTS = []
    settings.MIRROR_UPSTREAM_LIBRARY_PREFIX = "auto"
    monkeypatch.setenv("GHCR_TOKEN", "ghcr-token-from-env")
    return settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "upstreams.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_a_file_of_several_upstreams_and_accounts(env, tmp_path):
    certificate = make_server_certificate(tmp_path / "tls")
    (tmp_path / "quay-password").write_text("quay-password-from-file\n")
    path = write(
        tmp_path,
        f"""
        upstreams:
          - url: https://ghcr.io
            alias: ghcr
            tag_ttl: 300
            stale_policy: never
            max_staleness: 86400
            allow: ["myorg/*"]
            deny: [myorg/secret]
            connect_timeout: 2
            read_timeout: 30.5
            max_connections: 8
            accounts:
              - username: bot
                password_env: GHCR_TOKEN
              - anonymous: true
          - url: https://quay.io/
            name: quay
            hosts: quay.io, quay.example
            ca_bundle: {certificate.ca_cert}
            accounts:
              - username: robot
                password_file: {tmp_path / "quay-password"}
          - url: https://registry-1.docker.io
            tls_verify: true
            accounts:
              - username: hub-bot
                password: hub-password
    """,
    )
    applied = upstreamconfig.apply_file(path)
    assert [u.name for u in applied] == ["ghcr-io", "quay", "registry-1-docker-io"]
    ghcr = Upstream.objects.get(url="https://ghcr.io")
    assert (ghcr.hosts, ghcr.alias, ghcr.tag_ttl_seconds(), ghcr.serves_stale, ghcr.max_staleness_seconds()) == (
        "ghcr.io",
        "ghcr",
        300,
        False,
        86400,
    )
    assert ghcr.timeouts() == (2.0, 30.5) and ghcr.connection_limit() == 8 and ghcr.managed_by == Managed.FILE
    assert ghcr.allows("myorg/app") and not ghcr.allows("myorg/secret") and not ghcr.allows("other/app")
    assert [(a.username, a.get_secret()) for a in ghcr.accounts.order_by("position")] == [
        ("bot", "ghcr-token-from-env"),
        ("", ""),
    ]
    quay = Upstream.objects.get(name="quay")
    assert quay.url == "https://quay.io" and quay.host_names() == ["quay.io", "quay.example"]
    assert "BEGIN CERTIFICATE" in quay.ca_certificates
    assert quay.accounts.get().get_secret() == "quay-password-from-file"

    # The Docker Hub entry configures the default upstream: it stays the default, with Hub's names.
    hub = Upstream.objects.default()
    assert hub.name == "registry-1-docker-io" and hub.managed_by == Managed.FILE
    assert "docker.io" in hub.host_names() and hub.library_prefix
    assert [a.username for a in hub.accounts.all()] == ["hub-bot"], "no anonymous account beside the file's"
    assert routing.resolve("myorg/app", "ghcr.io").upstream == ghcr
    assert routing.resolve("quay.example/org/app", None).upstream == quay


def test_applying_again_follows_the_file(env, tmp_path, settings):
    first = write(
        tmp_path,
        """
        upstreams:
          - url: https://ghcr.io
            accounts:
              - {username: one, password: first}
              - {username: two, password: second}
    """,
    )
    upstreamconfig.apply_file(first)
    two = UpstreamAccount.objects.get(username="two")
    UpstreamAccount.objects.filter(pk=two.pk).update(ratelimit_remaining=7)
    second = write(
        tmp_path,
        """
        upstreams:
          - url: https://ghcr.io
            accounts:
              - {username: two, password: changed}
    """,
    )
    upstreamconfig.apply_file(second)
    ghcr = Upstream.objects.get(url="https://ghcr.io")
    (account,) = ghcr.accounts.all()
    assert (account.pk, account.get_secret(), account.position, account.ratelimit_remaining) == (
        two.pk,
        "changed",
        1,
        7,
    )

    upstreamconfig.apply_file(write(tmp_path, "upstreams: []\n"))
    ghcr.refresh_from_db()
    assert ghcr.managed_by == Managed.ADMIN, "an upstream left out is kept, and handed to the admin"

    # REGISTRY_PROXY_USERNAME stays first in line on the default upstream.
    settings.REGISTRY_PROXY_USERNAME, settings.REGISTRY_PROXY_PASSWORD = "env-bot", "env-password"
    upstreamconfig.apply_file(
        write(
            tmp_path,
            """
        upstreams:
          - url: https://registry-1.docker.io
            accounts: [{username: file-bot, password: p}]
    """,
        )
    )
    hub = Upstream.objects.default()
    assert [(a.username, a.managed_by) for a in hub.accounts.order_by("position")] == [
        ("env-bot", Managed.ENVIRONMENT),
        ("file-bot", Managed.FILE),
    ]


@pytest.mark.parametrize(
    "text,message",
    [
        ("upstreams: [{url: ftp://x}]", "url must be http(s)"),
        ("upstreams: [{url: https://x.example, colour: red}]", "unknown keys ['colour']"),
        ("upstreams: [{url: https://x.example, tag_ttl: soon}]", "tag_ttl must be a int"),
        ("upstreams: [{url: https://x.example, alias: a/b}]", "alias: one path component"),
        ("upstreams: [{url: https://x.example, hosts: ['bad host']}]", "hosts: not a registry host name"),
        ("upstreams: [{url: https://x.example, stale_policy: sometimes}]", "stale_policy"),
        (
            "upstreams: [{url: https://x.example, accounts: [{username: a, password_env: NOT_SET_ANYWHERE}]}]",
            "NOT_SET_ANYWHERE is not set",
        ),
        ("upstreams: [{url: https://x.example, accounts: [{anonymous: true, password: p}]}]", "none for anonymous"),
        ("upstreams: [{url: https://x.example}, {url: https://x.example/}]", "the same URL twice"),
        ("upstreams: [{url: https://x.example, alias: same}, {url: https://y.example, alias: same}]", "alias"),
        ("upstreams: {url: https://x.example}", "an `upstreams` list"),
        ("upstreams: [\n  - url", "not valid YAML"),
    ],
)
def test_mistakes_are_explained_and_nothing_is_applied(env, tmp_path, text, message):
    with pytest.raises(upstreamconfig.ConfigError) as raised:
        upstreamconfig.apply_file(write(tmp_path, text))
    assert message in str(raised.value)
    assert not Upstream.objects.exclude(url="https://registry-1.docker.io").exists()


def test_serve_refuses_to_start_with_a_file_it_cannot_apply(env, tmp_path):
    from django.core.management import call_command
    from django.core.management.base import CommandError

    env.MIRROR_UPSTREAMS = str(write(tmp_path, "upstreams: [{url: https://x.example, colour: red}]"))
    with pytest.raises(CommandError, match="MIRROR_UPSTREAMS: .*unknown keys"):
        call_command("serve")
