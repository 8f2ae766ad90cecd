"""Upstreams and their accounts in the admin.

Upstreams and accounts are added and edited here; those that come from the environment
(REGISTRY_PROXY_*) or the MIRROR_UPSTREAMS file show what those say read-only, since they are
written again at every start. A secret is write-only: the form takes a new one, nothing ever
shows the stored one (only whether there is one). Status (verification, rate limit, the
account in use, account switches) is read-only.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_post_parameters

from registry.models import AccountSwitch, Managed, Upstream, UpstreamAccount
from registry.upstreams import accounts, routing, verification

UPSTREAM_STATUS = ("managed_by", "active_account", "reachable", "checked_at", "check_message", "created_at")
# What each source writes, so the admin shows it read-only.
ENVIRONMENT_FIELDS = ("url", "hosts", "library_prefix")
ACCOUNT_STATUS = (
    "managed_by",
    "has_secret",
    "verification",
    "verification_message",
    "verified_at",
    "rejected_at",
    "cooldown_until",
    "ratelimit_remaining",
    "ratelimit_limit",
    "ratelimit_window",
    "ratelimit_seen_at",
    "requests_made",
    "pulls_made",
    "last_used_at",
)


def _changed(upstream: Upstream) -> None:
    """This process routes and picks accounts from the new record at once; others within seconds."""
    routing.forget()
    accounts.forget(upstream)


class AccountInline(admin.TabularInline):
    model = UpstreamAccount
    fields = (
        "label",
        "position",
        "enabled",
        "has_secret",
        "verification",
        "verified_at",
        "ratelimit_remaining",
        "cooldown_until",
    )
    readonly_fields = fields
    extra = 0
    show_change_link = True
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False  # accounts are added on their own page, where the secret is entered

    @admin.display(boolean=True, description="secret set")
    def has_secret(self, account: UpstreamAccount) -> bool:
        return account.has_secret


class SwitchInline(admin.TabularInline):
    model = AccountSwitch
    fk_name = "upstream"
    fields = ("at", "from_label", "to_label", "reason")
    readonly_fields = fields
    extra = 0
    can_delete = False
    verbose_name_plural = "account switches (newest first)"

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).order_by("-at", "-pk")


@admin.register(Upstream)
class UpstreamAdmin(admin.ModelAdmin):
    list_display = ("name", "url", "hosts", "alias", "account_in_use", "reachable", "checked_at", "managed_by")
    search_fields = ("name", "url", "hosts", "alias")
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    fieldsets = (
        ("Routing", {"fields": ("name", "url", "hosts", "alias", "library_prefix")}),
        ("Cache", {"fields": ("tag_ttl", "stale_policy", "max_staleness", "allow_repositories", "deny_repositories")}),
        (
            "Connection",
            {
                "fields": (
                    "tls_verify",
                    "ca_certificates",
                    "connect_timeout",
                    "read_timeout",
                    "max_connections",
                    "realm_hosts",
                )
            },
        ),
        ("Status", {"fields": UPSTREAM_STATUS}),
    )
    inlines = [AccountInline, SwitchInline]
    actions = ["verify_accounts"]

    @admin.display(description="account in use")
    def account_in_use(self, upstream: Upstream) -> str:
        return upstream.active_account.label if upstream.active_account_id else "-"

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("active_account")

    def get_readonly_fields(self, request, obj: Upstream | None = None):
        if obj is not None and obj.managed_by == Managed.FILE:
            return [field for _, options in self.fieldsets for field in options["fields"]]
        if obj is not None and obj.managed_by == Managed.ENVIRONMENT:
            return ENVIRONMENT_FIELDS + UPSTREAM_STATUS
        return UPSTREAM_STATUS

    def has_delete_permission(self, request, obj: Upstream | None = None) -> bool:
        return super().has_delete_permission(request, obj) and (obj is None or obj.managed_by == Managed.ADMIN)

    def save_model(self, request: HttpRequest, obj: Upstream, form, change: bool) -> None:
        super().save_model(request, obj, form, change)
        _changed(obj)

    @admin.action(description="Verify their accounts now", permissions=["change"])
    def verify_accounts(self, request: HttpRequest, queryset: QuerySet) -> None:
        for upstream in queryset:
            for account in upstream.accounts.filter(enabled=True):
                status = verification.verify(account)
                level = messages.SUCCESS if status == UpstreamAccount.Verification.OK else messages.WARNING
                self.message_user(request, f"{account}: {status}", level)
            accounts.forget(upstream)
            accounts.reconsider(upstream)


class AccountForm(forms.ModelForm):
    """The secret is write-only: a new one replaces the stored one, an empty field keeps it."""

    new_secret = forms.CharField(
        label="Password or access token",
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Write-only: stored encrypted, never shown. Leave empty to keep the stored one.",
    )
    clear_secret = forms.BooleanField(label="Remove the stored secret", required=False)

    class Meta:
        model = UpstreamAccount
        fields = ("upstream", "username", "position", "enabled")


@admin.register(UpstreamAccount)
class UpstreamAccountAdmin(admin.ModelAdmin):
    form = AccountForm
    list_display = (
        "label",
        "upstream",
        "position",
        "enabled",
        "in_use",
        "has_secret",
        "verification",
        "verified_at",
        "ratelimit_remaining",
        "ratelimit_limit",
        "ratelimit_window",
        "ratelimit_seen_at",
        "cooldown_until",
        "requests_made",
        "pulls_made",
        "last_used_at",
    )
    list_filter = ("upstream", "enabled", "verification")
    search_fields = ("username", "upstream__name")
    list_select_related = ("upstream",)
    actions = ["verify_now", "make_active"]

    @admin.display(description="username")
    def label(self, account: UpstreamAccount) -> str:
        return account.label

    @admin.display(boolean=True, description="in use")
    def in_use(self, account: UpstreamAccount) -> bool:
        return account.upstream.active_account_id == account.pk

    @admin.display(boolean=True, description="secret set")
    def has_secret(self, account: UpstreamAccount) -> bool:
        return account.has_secret

    @method_decorator(sensitive_post_parameters("new_secret"))  # never in an error report
    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        return super().changeform_view(request, object_id, form_url, extra_context)

    def get_fields(self, request, obj: UpstreamAccount | None = None):
        if obj is not None and obj.managed_by != Managed.ADMIN:
            return ("upstream", "username", "position", "enabled") + ACCOUNT_STATUS
        return ("upstream", "username", "new_secret", "clear_secret", "position", "enabled") + (
            ACCOUNT_STATUS if obj else ()
        )

    def get_readonly_fields(self, request, obj: UpstreamAccount | None = None):
        if obj is not None and obj.managed_by == Managed.FILE:
            return ("upstream", "username", "position", "enabled") + ACCOUNT_STATUS
        if obj is not None and obj.managed_by == Managed.ENVIRONMENT:
            return ("upstream", "username", "position") + ACCOUNT_STATUS
        return ACCOUNT_STATUS

    def has_delete_permission(self, request, obj: UpstreamAccount | None = None) -> bool:
        return super().has_delete_permission(request, obj) and (obj is None or obj.managed_by == Managed.ADMIN)

    def save_model(self, request: HttpRequest, obj: UpstreamAccount, form, change: bool) -> None:
        if form.cleaned_data.get("clear_secret"):
            obj.set_secret("")
        elif form.cleaned_data.get("new_secret"):
            obj.set_secret(form.cleaned_data["new_secret"])
            obj.verification, obj.verification_message = "", ""
        super().save_model(request, obj, form, change)
        _changed(obj.upstream)

    @admin.action(description="Verify now (fetch a token)", permissions=["change"])
    def verify_now(self, request: HttpRequest, queryset: QuerySet) -> None:
        for account in queryset.select_related("upstream"):
            status = verification.verify(account)
            level = messages.SUCCESS if status == UpstreamAccount.Verification.OK else messages.WARNING
            self.message_user(request, f"{account}: {status}", level)
            accounts.forget(account.upstream)

    @admin.action(description="Use this account now", permissions=["change"])
    def make_active(self, request: HttpRequest, queryset: QuerySet) -> None:
        chosen = list(queryset.select_related("upstream"))
        if len({account.upstream_id for account in chosen}) != len(chosen):
            self.message_user(request, "choose at most one account per upstream", messages.ERROR)
            return
        for account in chosen:
            if not account.enabled:
                self.message_user(request, f"{account} is disabled", messages.ERROR)
                continue
            old = account.upstream.active_account
            Upstream.objects.filter(pk=account.upstream_id).update(active_account=account)
            AccountSwitch.objects.create(
                upstream=account.upstream,
                from_account=old,
                to_account=account,
                from_label=old.label if old else "",
                to_label=account.label,
                reason=f"chosen in the admin by {request.user.get_username()}",
            )
            accounts.forget(account.upstream)
            self.message_user(request, f"pulls from {account.upstream.name} now go through {account.label}")


@admin.register(AccountSwitch)
class AccountSwitchAdmin(admin.ModelAdmin):
    list_display = ("at", "upstream", "from_label", "to_label", "reason")
    list_filter = ("upstream",)
    readonly_fields = ("at", "upstream", "from_account", "to_account", "from_label", "to_label", "reason")

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
