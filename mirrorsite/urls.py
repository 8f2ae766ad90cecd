from django.contrib import admin
from django.urls import include, path, re_path

from access import views as access_views
from dashboard import metrics as dashboard_metrics, views as dashboard_views
from registry.api import views as registry_views

from . import health
from .adminlogin import RateLimitedLoginForm

# Repository names contain slashes, so they are matched loosely here and validated
# against the OCI grammar in the views (a bad name is NAME_INVALID, not a 404). `[\s\S]`, not
# `.`: a newline in a path is matched too, so it gets the registry's JSON error, not Django's page.
NAME = r"(?P<name>[\s\S]+?)"

admin.site.login_form = RateLimitedLoginForm  # failed logins lock a username out per address
# An exception no view caught: registry JSON on /v2/, a plain page elsewhere; never a traceback.
handler500 = "registry.api.responses.server_error"

urlpatterns = [
    path("v2/", registry_views.base),
    path("v2/token", access_views.token),
    re_path(r"^v2/_catalog$", registry_views.catalog),
    re_path(rf"^v2/{NAME}/manifests/(?P<reference>[^/]+)$", registry_views.manifest),
    re_path(rf"^v2/{NAME}/blobs/uploads(?:/.*)?$", registry_views.unsupported),
    re_path(rf"^v2/{NAME}/blobs/(?P<digest>[^/]+)$", registry_views.blob),
    re_path(rf"^v2/{NAME}/tags/list$", registry_views.tags_list),
    re_path(rf"^v2/{NAME}/referrers/(?P<digest>[^/]+)$", registry_views.referrers),
    re_path(r"^v2/[\s\S]*$", registry_views.unknown_endpoint),
    path("healthz", health.healthz),
    path("readyz", health.readyz),
    # The dashboard is the admin's landing page: matched before the admin's own index.
    path("admin/", admin.site.admin_view(dashboard_views.index), name="dashboard"),
    path("admin/", admin.site.urls),
    path("api/", include("dashboard.api.urls")),
    path("metrics", dashboard_metrics.metrics),
]
