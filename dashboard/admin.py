"""The dashboard's additions to the admin.

- Prefetch jobs: the registry's admin, extended with platform checkboxes on the "Prefetch
  image" form and live progress (the job's page follows it through the API until it ends);
  after queueing, staff land on that page.
- Repositories and tags: the registry's admins, with the bytes each holds.
- Upstream events: errors and digest mismatches, read-only.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponseRedirect
from django.template.loader import render_to_string
from django.urls import reverse

from registry.admin import PrefetchForm, PrefetchJobAdmin, ReadOnlyAdmin, RepositoryAdmin, TagAdmin
from registry.jobs.gc import format_bytes
from registry.jobs.imageref import parse_platforms
from registry.models import PrefetchJob, Repository, Tag

from . import figures
from .models import UpstreamEvent

COMMON_PLATFORMS = [
    "linux/amd64",
    "linux/arm64",
    "linux/arm/v7",
    "linux/arm/v6",
    "linux/386",
    "linux/ppc64le",
    "linux/s390x",
    "linux/riscv64",
]
ADD_FIELDS = ["image", "platform_choices", "platform_list"]


class PrefetchImageForm(PrefetchForm):
    platform_choices = forms.MultipleChoiceField(
        label="Platforms",
        required=False,
        choices=[(p, p) for p in COMMON_PLATFORMS],
        widget=forms.CheckboxSelectMultiple,
        help_text="None chosen, none typed below: every platform of the image.",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["image"].widget.attrs.update(placeholder="library/nginx:1.27", autofocus=True)
        self.fields["platform_list"].label = "Other platforms"

    def clean(self) -> dict:
        data = super().clean()
        if "platforms" in data:
            chosen = parse_platforms(data.get("platform_choices") or [])
            data["platforms"] = chosen + [p for p in data["platforms"] if p not in chosen]
        return data


admin.site.unregister(PrefetchJob)


@admin.register(PrefetchJob)
class PrefetchJobLiveAdmin(PrefetchJobAdmin):
    list_display = ("__str__", "platforms", "live_progress", "requested_by", "created_at", "finished_at")
    change_form_template = "dashboard/prefetchjob_change_form.html"

    class Media:
        css = {"all": ("dashboard/dashboard.css",)}
        js = ("dashboard/live.js",)

    @admin.display(description="status and progress")
    def live_progress(self, job: PrefetchJob) -> str:
        return render_to_string("dashboard/job_progress.html", {"job": job, "progress": figures.job_progress(job)})

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"], kwargs["fields"] = PrefetchImageForm, ADD_FIELDS
            # The registry's admin would put its own form back: build this one directly.
            return admin.ModelAdmin.get_form(self, request, obj, change, **kwargs)
        return super().get_form(request, obj, change, **kwargs)

    def get_fields(self, request, obj=None):
        return ADD_FIELDS if obj is None else super().get_fields(request, obj)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        job = self.get_object(request, object_id)
        extra = {"job": job, "progress": figures.job_progress(job) if job else None, **(extra_context or {})}
        return super().change_view(request, object_id, form_url, extra)

    def response_add(self, request: HttpRequest, obj: PrefetchJob, post_url_continue=None):
        """Queued: show the job's page, which follows its progress."""
        if self.has_view_permission(request, obj):
            self.message_user(request, f"Queued prefetch job {obj.pk} for {obj}.")
            return HttpResponseRedirect(reverse("admin:registry_prefetchjob_change", args=[obj.pk]))
        return super().response_add(request, obj, post_url_continue)


admin.site.unregister(Repository)


@admin.register(Repository)
class RepositorySizeAdmin(RepositoryAdmin):
    list_display = (*RepositoryAdmin.list_display[:2], "stored", *RepositoryAdmin.list_display[2:])

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).annotate(stored_bytes=figures.repository_bytes_subquery())

    @admin.display(description="blobs stored", ordering="stored_bytes")
    def stored(self, repository: Repository) -> str:
        return format_bytes(repository.stored_bytes or 0)


admin.site.unregister(Tag)


@admin.register(Tag)
class TagSizeAdmin(TagAdmin):
    list_display = (*TagAdmin.list_display[:2], "image_size", *TagAdmin.list_display[2:])

    @admin.display(description="image size")
    def image_size(self, tag: Tag) -> str:
        return format_bytes(figures.image_bytes(tag.manifest_id))


@admin.register(UpstreamEvent)
class UpstreamEventAdmin(ReadOnlyAdmin):
    list_display = ("at", "kind", "upstream", "account", "repository", "message")
    list_filter = ("kind", "upstream")
    search_fields = ("message", "repository")
