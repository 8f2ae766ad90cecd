"""What the upstream client refuses from a hostile upstream: redirects of anything but blobs,
token realms on other hosts, and header values it cannot trust (the client alone, against a
scripted loopback registry; a Listener stands in for an internal service)."""

from __future__ import annotations

import base64

import pytest
from requests.structures import CaseInsensitiveDict

from registry import oci
from registry.upstreams.client import (
    RETRY_AFTER_MAX,
    RateLimit,
    RealmRefused,
    UpstreamClient,
    UpstreamRefused,
    UpstreamResponse,
    parse_ratelimit,
    retry_after,
)
from tests.support.fake_registry import FakeRegistry, Listener, answer, error
from tests.support.images import build_image

IMAGE = build_image("library/x", "1", layer_sizes=[1024], seed=8700)
BASIC = "Basic " + base64.b64encode(b"bot:s3cret").decode()


@pytest.fixture
def hostile():
    with FakeRegistry() as registry, Listener() as listener:
        yield registry, listener


def test_a_redirected_manifest_tag_list_or_v2_is_refused_and_never_followed(hostile):
    registry, listener = hostile
    for method, path in (("GET", "/v2/library/x/manifests/1"), ("GET", "/v2/library/x/tags/list"), ("GET", "/v2/")):
        registry.script(method, path, answer(307, Location=f"{listener.url}/internal"))
    client = UpstreamClient(registry.url)
    with pytest.raises(UpstreamRefused) as refused:
        client.get_manifest("library/x", "1")
    assert refused.value.status == 502 and "manifest" in refused.value.message
    with pytest.raises(UpstreamRefused):
        client.head_manifest("library/x", "1")
    with pytest.raises(UpstreamRefused) as refused:
        client.get_tags("library/x", None, None)
    assert "tag list" in refused.value.message
    with pytest.raises(UpstreamRefused):
        client.check_credentials()
    assert listener.requests == []


def test_a_blob_redirect_is_followed_on_loopback_without_credentials(hostile):
    registry, listener = hostile
    blob = IMAGE.layers[0]
    with FakeRegistry() as cdn:
        cdn.script("GET", "/cdn/blob", answer(200, blob.data))
        registry.script("GET", f"/v2/library/x/blobs/{blob.digest}", answer(307, Location=f"{cdn.url}/cdn/blob?sig=1"))
        download = UpstreamClient(registry.url).open_blob("library/x", blob.digest)
        assert b"".join(download.chunks()) == blob.data
        download.close()
        assert cdn.seen("/cdn/blob")[0].query == {"sig": ["1"]}
    assert listener.requests == []


def test_a_foreign_token_realm_gets_nothing_not_even_an_anonymous_request(hostile):
    registry, listener = hostile
    challenge = f'Bearer realm="http://localhost:{listener.port}/token",service="hostile"'
    registry.script("GET", "/v2/", answer(401, WWW_Authenticate=challenge))
    registry.script("GET", "/v2/library/x/manifests/1", answer(401, WWW_Authenticate=challenge))
    for client in (UpstreamClient(registry.url, "bot", "s3cret"), UpstreamClient(registry.url)):
        with pytest.raises(RealmRefused) as refused:
            client.check_credentials()
        assert "localhost" in refused.value.message and "no credentials sent" in refused.value.message
        with pytest.raises(RealmRefused):
            client.get_manifest("library/x", "1")
    assert listener.requests == []


def test_a_realm_on_the_upstreams_own_host_gets_the_credentials(hostile):
    registry, _ = hostile

    def token(seen):
        if seen.headers.get("Authorization") != BASIC:
            return answer(401)
        return answer(200, {"token": "T0K", "expires_in": 300})

    def manifest(seen):
        if seen.headers.get("Authorization") != "Bearer T0K":
            return answer(401, WWW_Authenticate=f'Bearer realm="{registry.url}/token",service="own"')
        return answer(200, IMAGE.manifest, Content_Type=IMAGE.media_type, Docker_Content_Digest=IMAGE.digest)

    registry.script("GET", "/token", token)
    registry.script("GET", "/v2/library/x/manifests/1", manifest)
    assert UpstreamClient(registry.url, "bot", "s3cret").get_manifest("library/x", "1").content == IMAGE.manifest


def test_a_redirected_token_request_is_refused(hostile):
    registry, listener = hostile
    registry.script("GET", "/v2/", answer(401, WWW_Authenticate=f'Bearer realm="{registry.url}/token"'))
    registry.script("GET", "/token", answer(307, Location=f"{listener.url}/steal"))
    with pytest.raises(UpstreamRefused) as refused:
        UpstreamClient(registry.url, "bot", "s3cret").check_credentials()
    assert "token service redirected" in refused.value.message
    assert listener.requests == []


def test_an_unusable_challenge_or_token_is_refused(hostile):
    registry, _ = hostile
    registry.script(
        "GET", "/v2/", answer(401, WWW_Authenticate=f'Bearer realm="{registry.url}/token",service="a\x7fb"')
    )
    with pytest.raises(UpstreamRefused):
        UpstreamClient(registry.url).check_credentials()
    registry.script("GET", "/v2/", answer(401, WWW_Authenticate=f'Bearer realm="{registry.url}/token"'))
    registry.script("GET", "/token", answer(200, {"token": "two words", "expires_in": 300}))
    with pytest.raises(oci.Unavailable, match="without a token"):
        UpstreamClient(registry.url).check_credentials()


def headers(**values: str) -> CaseInsensitiveDict:
    return CaseInsensitiveDict({name.replace("_", "-"): value for name, value in values.items()})


def test_header_values_are_checked_before_use():
    digest = IMAGE.digest
    assert UpstreamResponse(200, headers(Docker_Content_Digest=digest)).digest == digest
    assert UpstreamResponse(200, headers()).digest is None
    for bad in ("sha256:" + "z" * 64, "md5:abc", digest + "\r\nX: 1", "x" * 5000):
        with pytest.raises(oci.ManifestInvalid):  # the upstream's fault: 502, never stored or trusted
            _ = UpstreamResponse(200, headers(Docker_Content_Digest=bad)).digest
    assert UpstreamResponse(200, headers(Content_Length="12")).content_length == 12
    for bad in ("١٢", "+12", "1_2", "-1", "9" * 30):
        assert UpstreamResponse(200, headers(Content_Length=bad)).content_length is None
    assert parse_ratelimit(headers(ratelimit_limit="100;w=21600", ratelimit_remaining="76;w=21600")) == RateLimit(
        100, 76, 21600
    )
    for bad in ("١٠٠;w=21600", "-5;w=1", "99999999999;w=1", "1_000"):
        assert parse_ratelimit(headers(ratelimit_remaining=bad)) is None
    assert parse_ratelimit(headers(ratelimit_remaining="5;w=99999999999")) == RateLimit(None, 5, None)
    assert retry_after(headers(Retry_After="30")) == "30"
    assert retry_after(headers(Retry_After="999999999")) == str(RETRY_AFTER_MAX)
    for bad in ("١٢", "²", "Wed, 21 Oct 2015 07:28:00 GMT", "30\r\nX: 1", "-1"):
        assert retry_after(headers(Retry_After=bad)) is None


def test_a_429s_retry_after_reaches_the_client_only_as_checked(hostile):
    registry, _ = hostile
    registry.script(
        "GET", "/v2/library/x/manifests/1", error(429, "TOOMANYREQUESTS", Retry_After="²")
    )  # isdigit(), not int()
    with pytest.raises(oci.TooManyRequests) as limited:
        UpstreamClient(registry.url).get_manifest("library/x", "1")
    assert limited.value.detail == {"retry_after": None}


# --- with the database: the cache, verification, configuration ------------------------------------
@pytest.fixture
def db_upstream(db, settings, tmp_path, hostile):
    from registry import memory
    from registry.models import Upstream

    settings.MIRROR_DATA_DIR = tmp_path
    memory.forget_all()
    registry, listener = hostile
    yield Upstream.objects.create(name="hostile", url=registry.url, library_prefix=True), registry, listener
    memory.forget_all()


@pytest.mark.parametrize("media_type", ["text/html", "image/svg+xml", "application/json\r\nX-Injected: 1", "a" * 5000])
def test_the_cache_refuses_a_manifest_of_another_media_type_and_stores_nothing(db_upstream, media_type):
    import json

    from registry.models import Manifest, Repository
    from registry.proxy import manifests
    from registry.upstreams.routing import Route

    upstream, registry, _ = db_upstream
    body = json.dumps({"schemaVersion": 2, "mediaType": media_type, "body": "<script>alert(1)</script>"}).encode()
    registry.script("GET", "/v2/library/x/manifests/1", answer(200, body))
    for _attempt in range(2):
        with pytest.raises(oci.ManifestInvalid):
            manifests.get_manifest(Route(upstream, "x"), oci.parse_reference("1"))
    assert len(registry.seen("/v2/library/x/manifests/1")) == 2, "nothing cached: asked again"
    assert not Manifest.objects.exists() and not Repository.objects.exists()


def test_verification_says_why_a_foreign_realm_got_nothing(db_upstream):
    from registry.models import Upstream, UpstreamAccount
    from registry.upstreams import verification

    upstream, registry, listener = db_upstream
    registry.script("GET", "/v2/", answer(401, WWW_Authenticate=f'Bearer realm="http://localhost:{listener.port}/t"'))
    account = UpstreamAccount(upstream=upstream, username="bot")
    account.set_secret("s3cret")
    account.save()
    assert verification.verify(account) == UpstreamAccount.Verification.REFUSED
    account.refresh_from_db()
    assert "localhost" in account.verification_message and "no credentials sent" in account.verification_message
    assert "localhost" in Upstream.objects.get(pk=upstream.pk).check_message
    assert listener.requests == []


def test_realm_hosts_come_from_the_file_and_are_checked(db, tmp_path):
    from registry.upstreams import configfile as upstreamconfig

    path = tmp_path / "upstreams.yaml"
    path.write_text("upstreams:\n  - url: https://registry.gitlab.example\n    realm_hosts: [GitLab.example]\n")
    (upstream,) = upstreamconfig.apply_file(path)
    assert upstream.token_realm_hosts() == ["gitlab.example"]
    for bad in ("https://gitlab.example", "gitlab.example:443", "gitlab.example/jwt"):
        path.write_text(f"upstreams:\n  - url: https://registry.gitlab.example\n    realm_hosts: ['{bad}']\n")
        with pytest.raises(upstreamconfig.ConfigError, match="realm_hosts"):
            upstreamconfig.load(path)
    path.write_text("upstreams:\n  - url: https://registry-1.docker.io\n")
    (hub,) = upstreamconfig.apply_file(path)
    assert hub.token_realm_hosts() == ["auth.docker.io"], "Docker Hub's default"


def test_realm_hosts_are_edited_in_the_admin(admin_client, db):
    from registry.models import Upstream

    upstream = Upstream.objects.create(name="gitlab", url="https://registry.gitlab.example")
    page = admin_client.get(f"/admin/registry/upstream/{upstream.pk}/change/")
    assert b'name="realm_hosts"' in page.content
    form = {
        "name": "gitlab",
        "url": "https://registry.gitlab.example",
        "hosts": "registry.gitlab.example",
        "alias": "",
        "stale_policy": "serve",
        "tls_verify": "on",
        "realm_hosts": "gitlab.example, auth.gitlab.example",
        "accounts-TOTAL_FORMS": "0",
        "accounts-INITIAL_FORMS": "0",
        "account_switches-TOTAL_FORMS": "0",
        "account_switches-INITIAL_FORMS": "0",
    }
    answer_ = admin_client.post(f"/admin/registry/upstream/{upstream.pk}/change/", form)
    assert answer_.status_code == 302, answer_.content[:2000]
    upstream.refresh_from_db()
    assert upstream.token_realm_hosts() == ["gitlab.example", "auth.gitlab.example"]
    form["realm_hosts"] = "https://gitlab.example"
    assert b"not a host name" in admin_client.post(f"/admin/registry/upstream/{upstream.pk}/change/", form).content


def test_upgrading_forgets_manifests_cached_with_another_media_type(db):
    """The migration that brings realm hosts drops manifests an older mirror stored as markup."""
    import importlib

    from django.apps import apps
    from django.utils import timezone

    from registry.models import Manifest, Repository, Tag, Upstream

    migration = importlib.import_module("registry.migrations.0004_upstream_realm_hosts")
    repository = Repository.objects.create(
        upstream=Upstream.objects.create(name="old", url="https://old.example"), name="x"
    )
    kept = Manifest.objects.create(
        repository=repository, digest="sha256:" + "a" * 64, media_type=oci.OCI_INDEX, content=b"{}", size=2
    )
    for n, media_type in enumerate(("text/html", "image/svg+xml", "application/json\r\nX: 1")):
        html = Manifest.objects.create(
            repository=repository, digest=f"sha256:{n}" + "b" * 63, media_type=media_type, content=b"<script>", size=8
        )
        Tag.objects.create(repository=repository, name=f"t{n}", manifest=html, validated_at=timezone.now())
    migration.forget_manifests_served_as_something_else(apps, None)
    assert list(Manifest.objects.all()) == [kept] and not Tag.objects.exists()


def test_changed_realm_hosts_take_effect_on_the_next_request(db_upstream):
    from registry.upstreams import accounts, failover

    upstream, _, _ = db_upstream
    before = failover.client_for(upstream)
    assert before.session.adapters["https://"].destinations.realm_hosts == frozenset()
    upstream.realm_hosts = "localhost"
    after = failover.client_for(upstream)
    assert after is not before and after.session.adapters["https://"].destinations.realm_hosts == {"localhost"}
    assert after._client(accounts.in_order(upstream)[0]).destinations.trusts("localhost")
