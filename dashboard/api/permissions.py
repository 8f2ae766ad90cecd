"""Who may use the REST API: active staff read; a write also needs the Django permissions
the view names for its method (the same ones the admin's actions ask for)."""

from __future__ import annotations

from rest_framework.permissions import SAFE_METHODS, BasePermission


class StaffReadsPermittedWrites(BasePermission):
    message = "Staff only; writes need the matching permission."

    def has_permission(self, request, view) -> bool:
        user = request.user
        if not (user and user.is_authenticated and user.is_active and user.is_staff):
            return False
        if request.method in SAFE_METHODS:
            return True
        needed = getattr(view, "write_permissions", {}).get(request.method)
        return needed is not None and user.has_perms(needed)
