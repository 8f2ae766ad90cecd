"""The cache as staff see it (upstreams and their accounts: admin_upstreams.py).

What was cached is read-only here; staff act on it through actions: pin and unpin (garbage
collection never evicts a pinned image), evict now, prefetch. Prefetch jobs are added here
too, and garbage collection runs are listed with what they freed.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db import transaction
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.http import HttpRequest

from registry import oci
from registry.admin import upstreams as admin_upstreams  # noqa: F401 (it registers its pages)
from registry.jobs import gc, pins, tasks
from registry.jobs.imageref import ImageRef, ImageRefInvalid, format_platforms, parse_image, parse_platforms
from registry.models import Blob, GcRun, Manifest, Pin, PrefetchJob, Repository, Tag


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class CacheActions:
    """Pin, unpin, evict and prefetch, for admins of what points at manifests (tags, manifests)."""

    def has_pin_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perms(["registry.add_pin", "registry.delete_pin"])

    def has_evict_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("registry.delete_manifest")

    def has_prefetch_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("registry.add_prefetchjob")

    def images(self, queryset: QuerySet) -> list[ImageRef]:
        raise NotImplementedError

    def manifest_ids(self, queryset: QuerySet) -> set[int]:
        raise NotImplementedError

    @admin.action(description="Pin (never evict)", permissions=["pin"])
    def pin(self, request: HttpRequest, queryset: QuerySet) -> None:
        images = self.images(queryset)
        for image in images:
            pins.pin(image, created_by=request.user.get_username())
        self.message_user(request, f"Pinned {len(images)}: {', '.join(map(str, images))}")

    @admin.action(description="Unpin", permissions=["pin"])
    def unpin(self, request: HttpRequest, queryset: QuerySet) -> None:
        removed = [image for image in self.images(queryset) if pins.unpin(image)]
        self.message_user(
            request, f"Unpinned {len(removed)}" + (f": {', '.join(map(str, removed))}" if removed else "")
        )

    @admin.action(description="Evict now (with their images)", permissions=["evict"])
    def evict(self, request: HttpRequest, queryset: QuerySet) -> None:
        try:
            plan, run = gc.evict(self.manifest_ids(queryset), trigger=f"admin: {request.user.get_username()}")
        except gc.GcBusy as busy:
            self.message_user(request, str(busy), messages.WARNING)
            return
        for note in plan.notes:
            self.message_user(request, note, messages.WARNING)
        kept = len(plan.blobs) - run.blobs_deleted
        self.message_user(
            request,
            f"Evicted {len(plan.evictions)} images ({run.manifests_deleted} manifests, {run.tags_deleted} tags), "
            f"freed {gc.format_bytes(run.bytes_freed)} in {run.blobs_deleted} blobs"
            + (f"; {kept} blobs used meanwhile were kept" if kept else "")
            + ". Blobs pulled or written within the grace period stay until a later collection.",
        )

    @admin.action(description="Prefetch (all platforms)", permissions=["prefetch"])
    def prefetch(self, request: HttpRequest, queryset: QuerySet) -> None:
        jobs = [
            tasks.enqueue_prefetch(image, requested_by=request.user.get_username()) for image in self.images(queryset)
        ]
        self.message_user(request, f"Queued {len(jobs)} prefetch jobs: {', '.join(str(job.pk) for job in jobs)}")


def _pinned(repository: str, reference: str) -> Exists:
    """Whether a Pin covers the row: same upstream and repository, this reference or all of them."""
    return Exists(
        Pin.objects.filter(upstream=OuterRef("repository__upstream"), repository=OuterRef(repository)).filter(
            Q(reference=OuterRef(reference)) | Q(reference="")
        )
    )


@admin.register(Repository)
class RepositoryAdmin(ReadOnlyAdmin):
    list_display = ("name", "upstream", "created_at", "last_pulled_at")
    list_filter = ("upstream",)
    search_fields = ("name",)


@admin.register(Tag)
class TagAdmin(CacheActions, ReadOnlyAdmin):
    list_display = ("__str__", "manifest_digest", "pinned", "validated_at", "last_pulled_at")
    list_select_related = ("repository__upstream", "manifest")
    search_fields = ("repository__name", "name")
    actions = ["pin", "unpin", "evict", "prefetch"]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).annotate(is_pinned=_pinned("repository__name", "name"))

    @admin.display(description="digest")
    def manifest_digest(self, tag: Tag) -> str:
        return tag.manifest.digest

    @admin.display(description="pinned", boolean=True)
    def pinned(self, tag: Tag) -> bool:
        return tag.is_pinned

    def images(self, queryset: QuerySet) -> list[ImageRef]:
        return [
            ImageRef(tag.repository.upstream, tag.repository.name, oci.Reference(tag=tag.name))
            for tag in queryset.select_related("repository__upstream")
        ]

    def manifest_ids(self, queryset: QuerySet) -> set[int]:
        return set(queryset.values_list("manifest_id", flat=True))


@admin.register(Manifest)
class ManifestAdmin(CacheActions, ReadOnlyAdmin):
    list_display = ("digest", "repository", "media_type", "size", "pinned", "created_at", "last_pulled_at")
    list_select_related = ("repository",)
    search_fields = ("digest", "repository__name")
    exclude = ("content",)
    actions = ["pin", "unpin", "evict", "prefetch"]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).annotate(is_pinned=_pinned("repository__name", "digest"))

    @admin.display(description="pinned", boolean=True)
    def pinned(self, manifest: Manifest) -> bool:
        return manifest.is_pinned

    def images(self, queryset: QuerySet) -> list[ImageRef]:
        return [
            ImageRef(
                manifest.repository.upstream,
                manifest.repository.name,
                oci.Reference(digest=oci.parse_digest(manifest.digest)),
            )
            for manifest in queryset.select_related("repository__upstream")
        ]

    def manifest_ids(self, queryset: QuerySet) -> set[int]:
        return set(queryset.values_list("pk", flat=True))


@admin.register(Blob)
class BlobAdmin(ReadOnlyAdmin):
    list_display = ("digest", "size", "created_at", "last_pulled_at")
    search_fields = ("digest",)


@admin.register(Pin)
class PinAdmin(admin.ModelAdmin):
    """Pins are added and deleted (unpinned) here; they are never edited."""

    list_display = ("__str__", "upstream", "note", "created_by", "created_at")
    list_filter = ("upstream",)
    search_fields = ("repository", "reference", "note")
    fields = ("upstream", "repository", "reference", "note")

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: Pin, form, change: bool) -> None:
        obj.created_by = request.user.get_username()
        super().save_model(request, obj, form, change)


class PrefetchForm(forms.ModelForm):
    """An image as staff type it (`postgres:17`), and the platforms wanted."""

    image = forms.CharField(help_text="[registry/]name[:tag|@digest], e.g. postgres:17")
    platform_list = forms.CharField(
        label="Platforms", required=False, help_text="e.g. linux/amd64,linux/arm64; empty for all"
    )

    class Meta:
        model = PrefetchJob
        fields: list[str] = []

    def clean(self) -> dict:
        data = super().clean()
        try:
            data["parsed_image"] = parse_image(data.get("image", ""))
            data["platforms"] = parse_platforms([data.get("platform_list", "")])
        except ImageRefInvalid as error:
            raise forms.ValidationError(str(error)) from None
        return data


@admin.register(PrefetchJob)
class PrefetchJobAdmin(admin.ModelAdmin):
    list_display = ("__str__", "platforms", "status", "progress", "requested_by", "created_at", "finished_at")
    list_filter = ("status", "upstream")
    search_fields = ("repository", "reference", "requested_by")
    readonly_fields = [field.name for field in PrefetchJob._meta.fields]
    actions = ["run_again"]

    @admin.display(description="progress")
    def progress(self, job: PrefetchJob) -> str:
        return f"{job.blobs_done}/{job.blobs_total} blobs, {gc.format_bytes(job.bytes_done)} of {gc.format_bytes(job.bytes_total)}"

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = PrefetchForm
            kwargs["fields"] = ["image", "platform_list"]
        return super().get_form(request, obj, change, **kwargs)

    def get_readonly_fields(self, request, obj=None):
        return self.readonly_fields if obj is not None else []

    def get_fields(self, request, obj=None):
        return ["image", "platform_list"] if obj is None else self.readonly_fields

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: PrefetchJob, form, change: bool) -> None:
        image: ImageRef = form.cleaned_data["parsed_image"]
        obj.upstream, obj.repository, obj.reference = image.upstream, image.repository, str(image.reference)
        obj.platforms = format_platforms(form.cleaned_data["platforms"])
        obj.requested_by = request.user.get_username()
        obj.save()
        transaction.on_commit(lambda: tasks.send_prefetch(obj), robust=True)

    @admin.action(description="Prefetch again", permissions=["add"])
    def run_again(self, request: HttpRequest, queryset: QuerySet) -> None:
        jobs = []
        for old in queryset.select_related("upstream"):
            reference = oci.parse_reference(old.reference)
            image = ImageRef(old.upstream, old.repository, reference)
            jobs.append(
                tasks.enqueue_prefetch(
                    image, parse_platforms([old.platforms]), requested_by=request.user.get_username()
                )
            )
        self.message_user(request, f"Queued {len(jobs)} prefetch jobs: {', '.join(str(job.pk) for job in jobs)}")


@admin.register(GcRun)
class GcRunAdmin(ReadOnlyAdmin):
    list_display = (
        "started_at",
        "trigger",
        "freed",
        "blobs_deleted",
        "manifests_deleted",
        "temp_files_deleted",
        "store_bytes_after",
    )
    readonly_fields = [field.name for field in GcRun._meta.fields]

    @admin.display(description="freed")
    def freed(self, run: GcRun) -> str:
        return gc.format_bytes(run.bytes_freed + run.temp_bytes_freed)
