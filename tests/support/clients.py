"""What the real-client tests share: images of their own, and the proof that a pull went
through the mirror (and only through it)."""

from __future__ import annotations

from dataclasses import dataclass

from tests.support.accesslog import AccessLog, Entry, blob_gets
from tests.support.egress import EgressTrap
from tests.support.images import PushedImage, PushedIndex, push_image, push_index

KB = 1024

# User-Agent prefixes of the container clients: podman (containers/image), skopeo, containerd
# and dockerd. The mirror talks to the upstream with an agent of its own.
CLIENT_AGENTS = ("containers/", "containerd/", "skopeo/", "podman/", "libpod/", "Go-http-client/", "docker/")


@dataclass
class ClientImages:
    """Images no other test pulls, so each test's first pull is a cold one."""

    tag: PushedImage  # library/<prefix>-tag:1
    digest: PushedImage  # library/<prefix>-digest:1, pulled by digest
    multi: PushedIndex  # library/<prefix>-multi:1, linux/amd64 + linux/arm64
    direct: PushedImage  # library/<prefix>-direct:1, pulled by naming the mirror


def push_client_images(upstream, prefix: str, seed: int) -> ClientImages:
    sizes = [64 * KB, 300 * KB]
    return ClientImages(
        tag=push_image(upstream, f"library/{prefix}-tag", "1", layer_sizes=sizes, seed=seed),
        digest=push_image(upstream, f"library/{prefix}-digest", "1", layer_sizes=sizes, seed=seed + 1),
        multi=push_index(upstream, f"library/{prefix}-multi", "1", layer_sizes=sizes, seed=seed + 2),
        direct=push_image(upstream, f"library/{prefix}-direct", "1", layer_sizes=sizes, seed=seed + 3),
    )


@dataclass
class Watch:
    """Marks in the mirror's and the upstream's access logs, and a cleared egress trap."""

    mirror_log: AccessLog
    upstream_log: AccessLog
    trap: EgressTrap
    mirror_mark: int
    upstream_mark: int

    @classmethod
    def start(cls, mirror, upstream, trap: EgressTrap) -> Watch:
        mirror_log, upstream_log = AccessLog(mirror.log_path), AccessLog(upstream.log_path)
        trap.clear()
        return cls(mirror_log, upstream_log, trap, mirror_log.mark(), upstream_log.mark())

    def mirror_entries(self) -> list[Entry]:
        return self.mirror_log.entries(self.mirror_mark)

    def upstream_entries(self) -> list[Entry]:
        return self.upstream_log.entries(self.upstream_mark)

    def assert_through_mirror(
        self, agent: str, blobs: list[str], *, cold: bool, absent: list[str] = (), query: dict[str, str] | None = None
    ) -> None:
        """The client (User-Agent prefix `agent`) got every blob in `blobs` from the mirror, and
        none in `absent`; it never reached the upstream nor anything beyond 127.0.0.1. With
        `cold`, the mirror fetched each blob from the upstream exactly once (it had none of
        them); otherwise not at all. `query`: parameters every client request carried."""
        assert self.trap.requests == [], f"the client tried to reach the internet: {self.trap.requests}"
        served = [e for e in self.mirror_entries() if e.user_agent.startswith(agent)]
        assert served, f"no request from {agent!r} reached the mirror"
        for digest in blobs:
            got = [e for e in blob_gets(served, digest) if e.status == 200]
            assert got, f"the mirror served no GET of {digest} to {agent!r}"
        for digest in absent:
            assert blob_gets(served, digest) == [], f"{agent!r} fetched {digest}, which it should not need"
        for key, value in (query or {}).items():
            for e in served:
                assert e.query.get(key) == [value], f"{e.method} {e.path} lacks ?{key}={value}: {e.query}"
        upstream = self.upstream_entries()
        bypass = [e for e in upstream if e.user_agent.startswith(CLIENT_AGENTS)]
        assert bypass == [], f"a client went to the upstream around the mirror: {bypass}"
        for digest in blobs:
            expected = 1 if cold else 0
            assert len(blob_gets(upstream, digest)) == expected, (
                f"upstream GETs of {digest}: {blob_gets(upstream, digest)}, expected {expected}"
            )
        for digest in absent:
            assert blob_gets(upstream, digest) == []


def blob_digests(image: PushedImage) -> list[str]:
    return [b.digest for b in image.blobs]
