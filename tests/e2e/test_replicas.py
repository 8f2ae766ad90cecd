"""Two web replicas of one deployment behind nginx, as docker-compose.yml runs them: data
directories of their own, one database, one Redis. Started together on a fresh database (they
take turns to migrate), pulled through the load balancer by skopeo: both serve, the upstream
hands out one token per repository for all of them (shared through Redis) and is asked for
the tag once; with one replica stopped, pulls go on through the other."""

from __future__ import annotations

from collections.abc import Iterator
import uuid

import pytest
import redis

from tests.support.accesslog import AccessLog
from tests.support.celery_worker import forget_keys
from tests.support.images import PushedImage, push_image
from tests.support.mirror import MirrorProcess
from tests.support.nginx import NginxFront

REDIS_URL = "redis://127.0.0.1:6379/10"  # a database of its own on the machine's Redis
KB = 1024


@pytest.fixture(scope="module")
def deployment(upstream, tmp_path_factory) -> Iterator[tuple[NginxFront, list[MirrorProcess]]]:
    redis.Redis.from_url(REDIS_URL).ping()  # the suite needs the machine's Redis
    root = tmp_path_factory.mktemp("replicas")
    shared = {
        "REDIS_URL": REDIS_URL,
        "MIRROR_REDIS_KEY_PREFIX": f"replicas-{uuid.uuid4().hex[:12]}:",
        # Every replica must sign and decrypt with the same keys (account secrets, shared tokens).
        "DJANGO_SECRET_KEY": f"replicas-test-{uuid.uuid4().hex}",
        "MIRROR_TAG_TTL": "3600",
    }
    first = MirrorProcess(root / "a", upstream.url, username=upstream.username, password=upstream.password, **shared)
    second = MirrorProcess(
        root / "b",
        upstream.url,
        username=upstream.username,
        password=upstream.password,
        database=first.database,
        **shared,
    )
    replicas = [first, second]
    nginx = None
    try:
        for replica in replicas:  # together, on a database nobody has migrated yet
            replica.launch()
        for replica in replicas:
            replica.wait_until_serving()
        nginx = NginxFront(root / "nginx", [replica.host for replica in replicas], root / "no-shared-blobs").start()
        yield nginx, replicas
    finally:
        if nginx is not None:
            nginx.stop()
        for replica in replicas:
            replica.stop()
        forget_keys(REDIS_URL, shared["MIRROR_REDIS_KEY_PREFIX"])


@pytest.fixture(scope="module")
def replicated(upstream) -> PushedImage:
    return push_image(upstream, "library/replicated", "1", layer_sizes=[200 * KB, 300 * KB], seed=7401)


def pull(skopeo, nginx: NginxFront, image: PushedImage, dest) -> dict[str, bytes]:
    skopeo.run(
        "copy", "--src-tls-verify=false", "--src-no-creds", f"docker://{nginx.host}/{image.reference}", f"dir:{dest}"
    )
    assert (dest / "manifest.json").read_bytes() == image.manifest
    return {p.name: p.read_bytes() for p in dest.iterdir() if len(p.name) == 64}


def served(replica: MirrorProcess, repository: str) -> int:
    return len([e for e in AccessLog(replica.log_path).entries() if e.path.startswith(f"/v2/{repository}/")])


def test_replicas_behind_the_balancer_share_the_database_tokens_and_tags(
    deployment, replicated, upstream, skopeo, tmp_path
):
    nginx, replicas = deployment
    assert replicas[0].query("SELECT COUNT(*) FROM registry_upstream") == [(1,)], "one database, one upstream record"
    tokens_before = len(upstream.token_server.requests)
    mark = upstream.log_mark()

    for attempt in ("first", "second", "third"):
        got = pull(skopeo, nginx, replicated, tmp_path / attempt)
        assert got == {blob.digest.split(":")[1]: blob.data for blob in replicated.blobs}, attempt

    assert all(served(replica, "library/replicated") > 0 for replica in replicas), "the balancer used both"
    scope = ("repository:library/replicated:pull",)
    tokens = [request for request in upstream.token_server.requests[tokens_before:] if request.scopes == scope]
    account_tokens = [request for request in tokens if request.user == upstream.username]
    assert len(account_tokens) == 1, "one token for the repository, whichever replica and worker process asked"
    # The anonymous question "may anyone pull this?" is asked once too: its answer is in the database.
    assert len(tokens) - len(account_tokens) == 1
    tag_gets = [
        r
        for r in upstream.requests_log(since=mark)
        if r.method == "GET" and r.path == "/v2/library/replicated/manifests/1" and r.status != 401
    ]
    assert len(tag_gets) == 1, "the tag is fetched once for all"


def test_with_one_replica_stopped_pulls_go_on_through_the_other(deployment, replicated, skopeo, tmp_path):
    nginx, replicas = deployment
    pull(skopeo, nginx, replicated, tmp_path / "warm")  # both replicas hold what the pull needs
    replicas[0].stop()
    before = served(replicas[1], "library/replicated")
    got = pull(skopeo, nginx, replicated, tmp_path / "after-stop")
    assert got == {blob.digest.split(":")[1]: blob.data for blob in replicated.blobs}
    assert served(replicas[1], "library/replicated") >= before + len(replicated.blobs) + 1, "the other did it all"
