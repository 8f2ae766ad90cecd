"""Routes of the REST API (mounted at /api/), its OpenAPI schema and browsable docs."""

from __future__ import annotations

from django.urls import path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from . import views

app_name = "api"

router = DefaultRouter()
router.register("repositories", views.RepositoryViewSet, basename="repository")
router.register("tags", views.TagViewSet, basename="tag")
router.register("prefetch-jobs", views.PrefetchJobViewSet, basename="prefetch-job")
router.register("pins", views.PinViewSet, basename="pin")
router.register("gc-runs", views.GcRunViewSet, basename="gc-run")
router.register("accounts", views.AccountViewSet, basename="account")
router.register("upstream-events", views.UpstreamEventViewSet, basename="upstream-event")

urlpatterns = [
    path("stats/summary/", views.SummaryView.as_view(), name="stats-summary"),
    path("stats/series/", views.SeriesView.as_view(), name="stats-series"),
    path("stats/top/", views.TopView.as_view(), name="stats-top"),
    path("cache/", views.CacheView.as_view(), name="cache"),
    path("evictions/", views.EvictionView.as_view(), name="evictions"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api:schema"), name="docs"),
    *router.urls,
    re_path(r"", views.not_found),  # last: what nothing above matched (e.g. an id that is not a number)
]
