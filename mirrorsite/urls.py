from django.contrib import admin
from django.urls import include, path, re_path

from access import views as access_views
from audit.recorder import recorded, recorded_blob
from dashboard import metrics as dashboard_metrics
from dashboard import stats
from dashboard import views as dashboard_views
from registry import signals
from registry.api import views as registry_views

from . import adminlogin, health

# Repository names contain slashes, so they are matched loosely here and validated
# against the OCI grammar in the views (a bad name is NAME_INVALID, not a 404). `[\s\S]`, not
# `.`: a newline in a path is matched too, so it gets the registry's JSON error, not Django's page.
NAME = r"(?P<name>[\s\S]+?)"

adminlogin.install(admin.site)  # password guessing is limited per user name and address, as on /v2/
# An exception no view caught: registry JSON on /v2/, a plain page elsewhere; never a traceback.
handler500 = "registry.api.responses.server_error"

# Statistics count what each pull view served, and the audit log records manifest pulls (inside
# `counted`, whose view of the request it reads): composed here, so registry knows neither.
manifest_view = stats.counted(signals.MANIFEST)(recorded(registry_views.manifest))
blob_view = stats.counted(signals.BLOB)(recorded_blob(registry_views.blob))  # blob reads: MIRROR_AUDIT_BLOBS

urlpatterns = [
    path("v2/", registry_views.base),
    path("v2/token", access_views.token),
    re_path(r"^v2/_catalog$", registry_views.catalog),
    re_path(rf"^v2/{NAME}/manifests/(?P<reference>[^/]+)$", manifest_view),
    re_path(rf"^v2/{NAME}/blobs/uploads(?:/.*)?$", registry_views.unsupported),
    re_path(rf"^v2/{NAME}/blobs/(?P<digest>[^/]+)$", blob_view),
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
