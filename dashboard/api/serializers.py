"""What the REST API reads and writes. Every field is declared: an upstream account's secret
is no field of any serializer here, so no response can carry it."""

from __future__ import annotations

from django.db.models import Q
from rest_framework import serializers

from registry.jobs import pins, tasks
from registry.jobs.gc import format_bytes
from registry.jobs.imageref import ImageRef, ImageRefInvalid, parse_image, parse_platforms
from registry.models import GcRun, Manifest, Pin, PrefetchJob, Repository, Tag

from .. import figures
from ..models import UpstreamEvent


# --- statistics -----------------------------------------------------------------------------------
class TotalsSerializer(serializers.Serializer):
    requests = serializers.IntegerField()
    hits = serializers.IntegerField()
    misses = serializers.IntegerField()
    stale = serializers.IntegerField(help_text="Served from cache while the upstream failed")
    errors = serializers.IntegerField()
    pulls = serializers.IntegerField(help_text="Manifest requests by tag")
    bytes_served = serializers.IntegerField()
    bytes_from_cache = serializers.IntegerField()
    bytes_from_upstream = serializers.IntegerField()
    hit_rate = serializers.FloatField(allow_null=True, help_text="(hits + stale) / (hits + stale + misses)")
    byte_hit_rate = serializers.FloatField(allow_null=True, help_text="bytes_from_cache / bytes_served")
    bandwidth_saved = serializers.IntegerField(help_text="bytes_served - bytes_from_upstream, at least 0")


class SummarySerializer(serializers.Serializer):
    generated_at = serializers.DateTimeField()
    windows = serializers.DictField(child=TotalsSerializer(), help_text="24h, 7d and 30d")


class PointSerializer(serializers.Serializer):
    start = serializers.DateTimeField()
    totals = TotalsSerializer()


class SeriesSerializer(serializers.Serializer):
    period = serializers.ChoiceField(choices=["hourly", "daily"])
    points = PointSerializer(many=True)


class RepositoryFiguresSerializer(serializers.Serializer):
    upstream = serializers.CharField()
    repository = serializers.CharField()
    totals = TotalsSerializer()


class TopSerializer(serializers.Serializer):
    days = serializers.IntegerField()
    by_pulls = RepositoryFiguresSerializer(many=True)
    by_bandwidth_saved = RepositoryFiguresSerializer(many=True)


class ImageSizeSerializer(serializers.Serializer):
    repository = serializers.CharField()
    digest = serializers.CharField()
    tags = serializers.ListField(child=serializers.CharField())
    bytes = serializers.IntegerField()
    last_pulled_at = serializers.DateTimeField(allow_null=True)


class CacheSerializer(serializers.Serializer):
    bytes = serializers.IntegerField(help_text="Blob bytes stored")
    blobs = serializers.IntegerField()
    manifests = serializers.IntegerField()
    images = serializers.IntegerField()
    repositories = serializers.IntegerField()
    tags = serializers.IntegerField()
    quota_bytes = serializers.IntegerField(help_text="MIRROR_CACHE_MAX_BYTES; 0 is no quota")
    quota_used = serializers.FloatField(allow_null=True)
    high_watermark_bytes = serializers.IntegerField()
    low_watermark_bytes = serializers.IntegerField()
    largest_images = ImageSizeSerializer(many=True)


class AccountSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    upstream = serializers.CharField()
    upstream_url = serializers.CharField()
    username = serializers.CharField(help_text="Empty for anonymous pulls")
    in_use = serializers.BooleanField()
    enabled = serializers.BooleanField()
    ratelimit_limit = serializers.IntegerField(allow_null=True)
    ratelimit_remaining = serializers.IntegerField(allow_null=True)
    ratelimit_window = serializers.IntegerField(allow_null=True, help_text="Seconds")
    ratelimit_seen_at = serializers.DateTimeField(allow_null=True)
    window_ends_at = serializers.DateTimeField(allow_null=True)
    credentials_verified = serializers.BooleanField(allow_null=True, help_text="null: not known (yet)")
    verification = serializers.CharField(help_text="ok, rejected, unreachable, error; empty: not verified yet")
    verification_message = serializers.CharField()
    verified_at = serializers.DateTimeField(allow_null=True)
    rejected_at = serializers.DateTimeField(allow_null=True)
    cooldown_until = serializers.DateTimeField(allow_null=True)
    requests_made = serializers.IntegerField()
    pulls_made = serializers.IntegerField()
    last_used_at = serializers.DateTimeField(allow_null=True)
    upstream_reachable = serializers.BooleanField(allow_null=True)
    upstream_checked_at = serializers.DateTimeField(allow_null=True)
    upstream_message = serializers.CharField()
    last_switch = serializers.CharField()


class UpstreamEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = UpstreamEvent
        fields = ["id", "at", "kind", "upstream", "account", "repository", "message"]


# --- the cache ------------------------------------------------------------------------------------
class RepositorySerializer(serializers.ModelSerializer):
    upstream = serializers.CharField(source="upstream.name", read_only=True)
    tag_count = serializers.IntegerField(read_only=True)
    manifest_count = serializers.IntegerField(read_only=True)

    class Meta:
        model = Repository
        fields = ["id", "upstream", "name", "created_at", "last_pulled_at", "tag_count", "manifest_count"]


class TagSerializer(serializers.ModelSerializer):
    upstream = serializers.CharField(source="repository.upstream.name", read_only=True)
    repository = serializers.CharField(source="repository.name", read_only=True)
    digest = serializers.CharField(source="manifest.digest", read_only=True)
    media_type = serializers.CharField(source="manifest.media_type", read_only=True)

    class Meta:
        model = Tag
        fields = ["id", "upstream", "repository", "name", "digest", "media_type", "validated_at", "last_pulled_at"]


class ImageField(serializers.CharField):
    """An image as staff type it: `[registry/]name[:tag|@digest]`."""

    def to_internal_value(self, data) -> ImageRef:
        try:
            return parse_image(super().to_internal_value(data))
        except ImageRefInvalid as error:
            raise serializers.ValidationError(str(error)) from None


class PlatformsField(serializers.ListField):
    """`["linux/amd64", "linux/arm64"]`; kept as the job's comma-separated text."""

    child = serializers.CharField()

    def to_representation(self, value: str) -> list[str]:
        return [item for item in value.split(",") if item]

    def to_internal_value(self, data) -> list:
        items = super().to_internal_value(data)
        try:
            return parse_platforms(items)
        except ImageRefInvalid as error:
            raise serializers.ValidationError(str(error)) from None


class PrefetchJobSerializer(serializers.ModelSerializer):
    image = ImageField(write_only=True, help_text="e.g. library/nginx:1.27")
    platforms = PlatformsField(required=False, help_text="Empty for every platform of an index")
    upstream = serializers.CharField(source="upstream.name", read_only=True)
    name = serializers.CharField(source="__str__", read_only=True)
    status_display = serializers.CharField(source="get_status_display", read_only=True)
    finished = serializers.BooleanField(read_only=True)
    progress = serializers.SerializerMethodField(
        help_text="Share of the bytes done, 0 to 1; null before the size is known"
    )
    progress_text = serializers.SerializerMethodField()

    class Meta:
        model = PrefetchJob
        fields = [
            "id",
            "image",
            "platforms",
            "upstream",
            "repository",
            "reference",
            "name",
            "status",
            "status_display",
            "finished",
            "progress",
            "progress_text",
            "message",
            "errors",
            "digest",
            "manifests_fetched",
            "blobs_total",
            "blobs_done",
            "bytes_total",
            "bytes_done",
            "bytes_downloaded",
            "requested_by",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = [name for name in fields if name not in ("image", "platforms")]

    def get_progress(self, job: PrefetchJob) -> float | None:
        return figures.job_progress(job)

    def get_progress_text(self, job: PrefetchJob) -> str:
        text = f"{job.blobs_done}/{job.blobs_total} blobs, {format_bytes(job.bytes_done)} of {format_bytes(job.bytes_total)}"
        return f"{text} · {job.message}" if job.message else text

    def create(self, validated_data: dict) -> PrefetchJob:
        user = self.context["request"].user
        return tasks.enqueue_prefetch(
            validated_data["image"], validated_data.get("platforms", []), requested_by=user.get_username()
        )


class PinSerializer(serializers.ModelSerializer):
    image = ImageField(write_only=True, help_text="e.g. library/postgres:17, or a repository with all_tags")
    all_tags = serializers.BooleanField(write_only=True, default=False, help_text="Pin the whole repository")
    upstream = serializers.CharField(source="upstream.name", read_only=True)

    class Meta:
        model = Pin
        fields = ["id", "image", "all_tags", "upstream", "repository", "reference", "note", "created_by", "created_at"]
        read_only_fields = ["repository", "reference", "created_by", "created_at"]

    def create(self, validated_data: dict) -> Pin:
        user = self.context["request"].user
        return pins.pin(
            validated_data["image"],
            whole_repository=validated_data["all_tags"],
            created_by=user.get_username(),
            note=validated_data.get("note", ""),
        )


class GcRunSerializer(serializers.ModelSerializer):
    class Meta:
        model = GcRun
        fields = [
            "id",
            "started_at",
            "finished_at",
            "trigger",
            "store_bytes_before",
            "store_bytes_after",
            "manifests_deleted",
            "tags_deleted",
            "repositories_deleted",
            "blobs_deleted",
            "bytes_freed",
            "temp_files_deleted",
            "temp_bytes_freed",
            "evicted",
        ]


class EvictionSerializer(serializers.Serializer):
    """Evict cached images now (pins still hold); each must be cached."""

    images = serializers.ListField(child=ImageField(), min_length=1, write_only=True)
    notes = serializers.ListField(child=serializers.CharField(), read_only=True)
    gc_run = GcRunSerializer(read_only=True)

    def validate_images(self, images: list[ImageRef]) -> set[int]:
        manifest_ids, missing = set(), []
        for image in images:
            where = Q(repository__upstream=image.upstream, repository__name=image.repository)
            if image.reference.digest is not None:
                found = Manifest.objects.filter(where, digest=str(image.reference.digest)).values_list("pk", flat=True)
            else:
                found = Tag.objects.filter(where, name=image.reference.tag).values_list("manifest_id", flat=True)
            ids = set(found)
            if not ids:
                missing.append(str(image))
            manifest_ids |= ids
        if missing:
            raise serializers.ValidationError(f"not cached: {', '.join(missing)}")
        return manifest_ids
