"""The synthetic images pushed to the upstream for one run.

Every cold measurement gets its own image (own seed, so no blob is shared) per system and
round: both systems start cold on identical sizes, and neither profits from the other's pull.
Only digests and sizes are kept; the bytes are dropped once pushed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from benchmarks.params import MiB, Params
from tests.support.images import build_image, push_built
from tests.support.upstream_registry import UpstreamRegistry


@dataclass(frozen=True)
class BlobRef:
    digest: str
    size: int


@dataclass(frozen=True)
class ImageRef:
    repository: str
    tag: str
    digest: str
    blobs: tuple[BlobRef, ...]  # config first, then layers

    @property
    def reference(self) -> str:
        return f"{self.repository}:{self.tag}"

    @property
    def total_size(self) -> int:
        return sum(b.size for b in self.blobs)

    @property
    def largest(self) -> BlobRef:
        return max(self.blobs, key=lambda b: b.size)


@dataclass
class Workload:
    large: ImageRef  # one ~200 MiB layer; warmed in both systems for the throughput runs
    manifest: ImageRef  # small; warmed in both systems for the manifest load
    ttl: dict[str, ImageRef]  # per system: small, first pulled right before the tag-pull count
    cold: dict[str, list[ImageRef]]  # per system: one multi-layer image per round
    crowd: dict[str, ImageRef]  # per system: multi-layer image for the concurrent cold pulls


def push(upstream: UpstreamRegistry, repository: str, layer_sizes: Sequence[int], seed: int) -> ImageRef:
    image = build_image(repository, "1", layer_sizes=layer_sizes, seed=seed)
    push_built(upstream, image)
    return ImageRef(repository, "1", image.digest, tuple(BlobRef(b.digest, b.size) for b in image.blobs))


def prepare(upstream: UpstreamRegistry, params: Params, systems: Sequence[str]) -> Workload:
    multi = [int(mb * MiB) for mb in params.layers_mib]
    small = [int(params.small_layer_kib * 1024)]
    seeds = iter(range(7000, 8000))
    large = push(upstream, "library/bench-large", [int(params.large_layer_mib * MiB)], next(seeds))
    manifest = push(upstream, "library/bench-manifest", small, next(seeds))
    ttl = {s: push(upstream, f"library/bench-ttl-{s}", small, next(seeds)) for s in systems}
    cold = {
        s: [push(upstream, f"library/bench-cold-{s}-{r}", multi, next(seeds)) for r in range(params.rounds)]
        for s in systems
    }
    crowd = {s: push(upstream, f"library/bench-crowd-{s}", multi, next(seeds)) for s in systems}
    return Workload(large, manifest, ttl, cold, crowd)
