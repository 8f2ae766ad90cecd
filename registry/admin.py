"""The cache as staff see it: read-only for now, edits come with upstream management."""
from django.contrib import admin
from django.db import models

from .models import Blob, Manifest, Repository, Tag, Upstream, UpstreamAccount


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Upstream)
class UpstreamAdmin(ReadOnlyAdmin):
    list_display = ("name", "url", "library_prefix", "created_at")
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}


@admin.register(UpstreamAccount)
class UpstreamAccountAdmin(ReadOnlyAdmin):
    list_display = ("username", "upstream", "ratelimit_remaining", "ratelimit_limit", "ratelimit_window", "ratelimit_seen_at")


@admin.register(Repository)
class RepositoryAdmin(ReadOnlyAdmin):
    list_display = ("name", "upstream", "created_at", "last_pulled_at")
    list_filter = ("upstream",)
    search_fields = ("name",)


@admin.register(Tag)
class TagAdmin(ReadOnlyAdmin):
    list_display = ("__str__", "manifest_digest", "validated_at", "last_pulled_at")
    list_select_related = ("repository", "manifest")
    search_fields = ("repository__name", "name")

    @admin.display(description="digest")
    def manifest_digest(self, tag: Tag) -> str:
        return tag.manifest.digest


@admin.register(Manifest)
class ManifestAdmin(ReadOnlyAdmin):
    list_display = ("digest", "repository", "media_type", "size", "created_at", "last_pulled_at")
    list_select_related = ("repository",)
    search_fields = ("digest", "repository__name")
    exclude = ("content",)


@admin.register(Blob)
class BlobAdmin(ReadOnlyAdmin):
    list_display = ("digest", "size", "created_at", "last_pulled_at")
    search_fields = ("digest",)
