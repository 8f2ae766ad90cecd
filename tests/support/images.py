"""Build synthetic (but real) container images and push them over the Registry HTTP API.

Layers are genuine gzipped tar archives; configs are genuine image configs whose
`rootfs.diff_ids` are the sha256 of the uncompressed tars. Content is derived
from a seed, so the same arguments always produce the same digests. Layer file
data comes from a seeded PRNG (incompressible), so a layer's compressed size is
close to the requested size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
import gzip
import hashlib
import io
import json
import random
import re
import tarfile
from typing import Protocol
from urllib.parse import urljoin

import requests

# Docker schema2 media types
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
# OCI media types
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"

MANIFEST_ACCEPT = ", ".join([OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST])

# A fixed timestamp keeps configs (and so digests) reproducible.
_CREATED = "2024-01-01T00:00:00Z"
_MTIME = 1704067200


class PushTarget(Protocol):
    """Anything with a base URL and (optional) credentials: UpstreamRegistry fits."""

    url: str
    username: str | None
    password: str | None


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Blob:
    digest: str
    size: int
    data: bytes = field(repr=False)
    media_type: str
    diff_id: str | None = None  # layers only: sha256 of the uncompressed tar


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    def as_dict(self) -> dict[str, str]:
        d = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            d["variant"] = self.variant
        return d


@dataclass
class PushedImage:
    """A single-platform image manifest as pushed (tag is None for index children)."""

    repository: str
    tag: str | None
    digest: str
    manifest: bytes = field(repr=False)
    media_type: str
    config: Blob
    layers: list[Blob]
    platform: Platform

    @property
    def blobs(self) -> list[Blob]:
        return [self.config, *self.layers]

    @property
    def reference(self) -> str:
        return f"{self.repository}:{self.tag}" if self.tag else f"{self.repository}@{self.digest}"

    @property
    def total_size(self) -> int:
        return sum(b.size for b in self.blobs)


@dataclass
class PushedIndex:
    """A multi-platform manifest list / OCI index and its child images."""

    repository: str
    tag: str
    digest: str
    manifest: bytes = field(repr=False)
    media_type: str
    children: list[PushedImage]

    @property
    def blobs(self) -> list[Blob]:
        seen: dict[str, Blob] = {}
        for child in self.children:
            for b in child.blobs:
                seen.setdefault(b.digest, b)
        return list(seen.values())

    @property
    def reference(self) -> str:
        return f"{self.repository}:{self.tag}"

    def child(self, architecture: str, os: str = "linux") -> PushedImage:
        for c in self.children:
            if c.platform.architecture == architecture and c.platform.os == os:
                return c
        raise KeyError(f"{os}/{architecture}")


# ----------------------------------------------------------------------------- building
def make_layer(size: int, rng: random.Random, index: int = 0) -> tuple[bytes, bytes]:
    """A gzipped tar holding ~`size` bytes of random data. Returns (gzipped, uncompressed tar)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:

        def add(name: str, data: bytes | None, mode: int) -> None:
            info = tarfile.TarInfo(name)
            info.mtime = _MTIME
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mode = mode
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))

        add(f"layer{index}", None, 0o755)
        add(f"layer{index}/README", f"synthetic layer {index}, seed-derived\n".encode(), 0o644)
        # tar headers + gzip framing add ~2 KB; subtract so the blob lands near `size`.
        payload = max(0, size - 2048)
        add(f"layer{index}/data.bin", rng.randbytes(payload), 0o644)
    tar_bytes = buf.getvalue()
    # mtime=0 and a fixed level make gzip output byte-for-byte reproducible.
    return gzip.compress(tar_bytes, compresslevel=1, mtime=0), tar_bytes


def build_image(
    repository: str,
    tag: str | None,
    *,
    layer_sizes: Sequence[int] = (100 * 1024,),
    seed: int = 0,
    os: str = "linux",
    arch: str = "amd64",
    variant: str | None = None,
    oci: bool = False,
) -> PushedImage:
    """Build (not push) an image; its digests depend only on seed, sizes, platform and `oci`."""
    # Content depends on seed + platform only: the same seed gives the same blobs in any repo.
    rng = random.Random(f"{seed}:{os}/{arch}/{variant}")
    layer_type = OCI_LAYER if oci else DOCKER_LAYER
    layers: list[Blob] = []
    for i, size in enumerate(layer_sizes):
        gz, raw = make_layer(size, rng, i)
        layers.append(Blob(sha256_digest(gz), len(gz), gz, layer_type, diff_id=sha256_digest(raw)))
    platform = Platform(os, arch, variant)
    config_obj: dict = {
        "architecture": arch,
        "os": os,
        "created": _CREATED,
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", f"SEED={seed}"],
            "Cmd": ["/bin/sh"],
        },
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": [{"created": _CREATED, "created_by": f"synthetic layer {i}"} for i in range(len(layers))],
    }
    if variant:
        config_obj["variant"] = variant
    config_bytes = canonical_json(config_obj)
    config = Blob(sha256_digest(config_bytes), len(config_bytes), config_bytes, OCI_CONFIG if oci else DOCKER_CONFIG)
    media_type = OCI_MANIFEST if oci else DOCKER_MANIFEST
    manifest_obj = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {"mediaType": config.media_type, "size": config.size, "digest": config.digest},
        "layers": [{"mediaType": b.media_type, "size": b.size, "digest": b.digest} for b in layers],
    }
    manifest = json.dumps(manifest_obj, indent=3).encode()  # pretty, like real registries serve
    return PushedImage(repository, tag, sha256_digest(manifest), manifest, media_type, config, layers, platform)


# ----------------------------------------------------------------------------- HTTP client
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


class RegistryClient:
    """Minimal Registry v2 client: Bearer token dance with Basic creds, blob + manifest push."""

    def __init__(self, target: PushTarget, *, session: requests.Session | None = None) -> None:
        self.base = target.url.rstrip("/")
        self.username = getattr(target, "username", None)
        self.password = getattr(target, "password", None)
        self.http = session or requests.Session()
        self.http.trust_env = False  # loopback only; never route via a proxy from the env
        self._tokens: dict[str, str] = {}  # scope -> token

    def _token(self, challenge: str, scope: str) -> str | None:
        if not challenge.lower().startswith("bearer "):
            return None
        params = dict(_CHALLENGE_PARAM.findall(challenge))
        auth = (self.username, self.password) if self.username else None
        r = self.http.get(
            params["realm"], params={"service": params.get("service", ""), "scope": scope}, auth=auth, timeout=30
        )
        r.raise_for_status()
        body = r.json()
        return body.get("token") or body.get("access_token")

    def request(self, method: str, url: str, repository: str, **kw) -> requests.Response:
        """Send with a cached token for `repository`; on 401, fetch one and retry once."""
        scope = f"repository:{repository}:pull,push"
        if not url.startswith("http"):
            url = self.base + url
        headers = dict(kw.pop("headers", None) or {})
        kw.setdefault("timeout", 120)
        if scope in self._tokens:
            headers["Authorization"] = f"Bearer {self._tokens[scope]}"
        r = self.http.request(method, url, headers=headers, **kw)
        if r.status_code == 401 and "WWW-Authenticate" in r.headers:
            token = self._token(r.headers["WWW-Authenticate"], scope)
            if token:
                self._tokens[scope] = token
                headers["Authorization"] = f"Bearer {token}"
                r = self.http.request(method, url, headers=headers, **kw)
        return r

    def blob_exists(self, repository: str, digest: str) -> bool:
        return self.request("HEAD", f"/v2/{repository}/blobs/{digest}", repository).status_code == 200

    def push_blob(self, repository: str, blob: Blob) -> None:
        if self.blob_exists(repository, blob.digest):
            return
        r = self.request("POST", f"/v2/{repository}/blobs/uploads/", repository)
        _expect(r, 202, "start upload")
        location = urljoin(self.base + "/", r.headers["Location"])
        sep = "&" if "?" in location else "?"
        # Monolithic upload: the whole blob in the closing PUT.
        r = self.request(
            "PUT",
            f"{location}{sep}digest={blob.digest}",
            repository,
            data=blob.data,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(blob.size)},
        )
        _expect(r, 201, f"upload {blob.digest}")
        got = r.headers.get("Docker-Content-Digest")
        if got and got != blob.digest:
            raise AssertionError(f"registry stored {got}, expected {blob.digest}")

    def push_manifest(self, repository: str, reference: str, manifest: bytes, media_type: str) -> str:
        r = self.request(
            "PUT",
            f"/v2/{repository}/manifests/{reference}",
            repository,
            data=manifest,
            headers={"Content-Type": media_type},
        )
        _expect(r, 201, f"put manifest {repository}:{reference}")
        digest = r.headers.get("Docker-Content-Digest") or sha256_digest(manifest)
        if digest != sha256_digest(manifest):
            raise AssertionError(f"registry reports {digest} for manifest {sha256_digest(manifest)}")
        return digest

    def manifest_digest(self, repository: str, reference: str) -> str | None:
        """Current digest of a tag (None if absent), via HEAD with every manifest type accepted."""
        r = self.request(
            "HEAD", f"/v2/{repository}/manifests/{reference}", repository, headers={"Accept": MANIFEST_ACCEPT}
        )
        if r.status_code == 404:
            return None
        _expect(r, 200, f"head manifest {repository}:{reference}")
        return r.headers["Docker-Content-Digest"]

    def delete_manifest(self, repository: str, digest: str) -> None:
        r = self.request("DELETE", f"/v2/{repository}/manifests/{digest}", repository)
        _expect(r, 202, f"delete manifest {repository}@{digest}")


def _expect(r: requests.Response, status: int, what: str) -> None:
    if r.status_code != status:
        raise RuntimeError(f"{what}: HTTP {r.status_code} {r.request.method} {r.url}: {r.text[:500]}")


def _client(registry: PushTarget | RegistryClient) -> RegistryClient:
    return registry if isinstance(registry, RegistryClient) else RegistryClient(registry)


# ----------------------------------------------------------------------------- public API
def push_built(registry: PushTarget | RegistryClient, image: PushedImage, reference: str | None = None) -> PushedImage:
    """Push an image built with build_image() (blobs, then manifest by tag or digest)."""
    client = _client(registry)
    for blob in image.blobs:
        client.push_blob(image.repository, blob)
    client.push_manifest(image.repository, reference or image.tag or image.digest, image.manifest, image.media_type)
    return image


def push_image(
    registry: PushTarget | RegistryClient,
    repo: str,
    tag: str,
    layer_sizes: Sequence[int] = (100 * 1024,),
    seed: int = 0,
    arch: str = "amd64",
    *,
    os: str = "linux",
    variant: str | None = None,
    oci: bool = False,
) -> PushedImage:
    """Build a single-platform image from `seed` and push it as `repo:tag`."""
    image = build_image(repo, tag, layer_sizes=layer_sizes, seed=seed, os=os, arch=arch, variant=variant, oci=oci)
    return push_built(registry, image)


def push_index(
    registry: PushTarget | RegistryClient,
    repo: str,
    tag: str,
    platforms: Sequence[tuple[str, str] | tuple[str, str, str]] = (("linux", "amd64"), ("linux", "arm64")),
    layer_sizes: Sequence[int] = (100 * 1024,),
    seed: int = 0,
    *,
    oci: bool = False,
) -> PushedIndex:
    """Push one image per (os, arch[, variant]) by digest, then the manifest list/index as `repo:tag`."""
    client = _client(registry)
    children: list[PushedImage] = []
    for plat in platforms:
        os_, arch = plat[0], plat[1]
        variant = plat[2] if len(plat) > 2 else None  # type: ignore[misc]
        child = build_image(repo, None, layer_sizes=layer_sizes, seed=seed, os=os_, arch=arch, variant=variant, oci=oci)
        push_built(client, child)
        children.append(child)
    media_type = OCI_INDEX if oci else DOCKER_MANIFEST_LIST
    index_obj = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": [
            {"mediaType": c.media_type, "size": len(c.manifest), "digest": c.digest, "platform": c.platform.as_dict()}
            for c in children
        ],
    }
    manifest = json.dumps(index_obj, indent=3).encode()
    digest = client.push_manifest(repo, tag, manifest, media_type)
    return PushedIndex(repo, tag, digest, manifest, media_type, children)


def retag(
    registry: PushTarget | RegistryClient,
    repo: str,
    tag: str,
    layer_sizes: Sequence[int] = (100 * 1024,),
    seed: int = 1,
    arch: str = "amd64",
    *,
    oci: bool = False,
) -> PushedImage:
    """Point an existing tag at a freshly built, different image ("the tag moved").

    Raises if the new image happens to equal what the tag already points at, so a
    test can never silently "move" a tag to the same digest.
    """
    client = _client(registry)
    before = client.manifest_digest(repo, tag)
    image = build_image(repo, tag, layer_sizes=layer_sizes, seed=seed, arch=arch, oci=oci)
    if image.digest == before:
        raise ValueError(f"{repo}:{tag} already points at {before}; pick another seed")
    return push_built(client, image)


def tag_existing(registry: PushTarget | RegistryClient, image: PushedImage | PushedIndex, tag: str) -> None:
    """Point `tag` at an already-pushed manifest (e.g. move a tag back)."""
    _client(registry).push_manifest(image.repository, tag, image.manifest, image.media_type)


def current_digest(registry: PushTarget | RegistryClient, repo: str, tag: str) -> str | None:
    """What `repo:tag` resolves to upstream right now."""
    return _client(registry).manifest_digest(repo, tag)
