"""The audit log in the admin: read-only, filterable and searchable."""

from __future__ import annotations

from django.contrib import admin

from registry.admin import ReadOnlyAdmin

from .models import PullRecord


@admin.register(PullRecord)
class PullRecordAdmin(ReadOnlyAdmin):
    list_display = (
        "at",
        "username",
        "client_address",
        "method",
        "upstream",
        "repository",
        "reference",
        "short_digest",
        "outcome",
        "status",
    )
    list_filter = ("outcome", "upstream", "method", ("user", admin.RelatedOnlyFieldListFilter), "at")
    date_hierarchy = "at"
    search_fields = ("repository", "reference", "digest", "client_address", "username", "user_agent")
    list_select_related = False
    show_full_result_count = False  # a count of a large log is slow on PostgreSQL
    list_per_page = 100

    @admin.display(description="digest", ordering="digest")
    def short_digest(self, record: PullRecord) -> str:
        return record.digest[:19] + "…" if len(record.digest) > 19 else record.digest
