from django.contrib import admin

from .models import AccessRule, RepositoryVisibility


@admin.register(AccessRule)
class AccessRuleAdmin(admin.ModelAdmin):
    list_display = ("position", "pattern", "upstream", "policy", "group_names", "note")
    list_display_links = ("pattern",)
    list_editable = ("position",)
    list_filter = ("policy", "upstream")
    filter_horizontal = ("groups",)
    search_fields = ("pattern", "note")

    @admin.display(description="groups")
    def group_names(self, rule: AccessRule) -> str:
        return ", ".join(group.name for group in rule.groups.all())


@admin.register(RepositoryVisibility)
class RepositoryVisibilityAdmin(admin.ModelAdmin):
    """What the upstreams told anonymous clients; deleting a record has it asked again."""

    list_display = ("repository", "upstream", "public", "checked_at")
    list_filter = ("public", "upstream")
    search_fields = ("repository",)
    readonly_fields = ("upstream", "repository", "public", "checked_at")

    def has_add_permission(self, request) -> bool:
        return False
