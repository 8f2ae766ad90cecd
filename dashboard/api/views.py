"""The REST API under /api/: statistics, the cache, prefetch jobs, pins, eviction, accounts.

Authentication by token (`Authorization: Token …`) or the admin's session; every view is for
active staff, and writes need the permission named in `write_permissions`.
"""

from __future__ import annotations

from datetime import UTC, datetime, time

from django.db.models import Count
from django.http import JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from registry.jobs import gc
from registry.models import GcRun, Pin, PrefetchJob, Repository, Tag

from .. import figures
from ..models import Kind, UpstreamEvent
from . import serializers

FILTER_PARAMETERS = [
    OpenApiParameter("upstream", str, description="An upstream's name"),
    OpenApiParameter("repository", str, description="A repository as the upstream knows it, e.g. library/alpine"),
    OpenApiParameter("account", str, description="An upstream username (empty: anonymous)"),
    OpenApiParameter("kind", str, enum=[choice for choice, _ in Kind.choices]),
]


def _filters(request: Request) -> dict[str, str]:
    return {name: request.query_params[name] for name in figures.FILTERS if name in request.query_params}


class SummaryView(APIView):
    """Requests, hits, misses, stale serves, errors and bytes over the last 24 hours, 7 and 30 days."""

    @extend_schema(parameters=FILTER_PARAMETERS, responses=serializers.SummarySerializer)
    def get(self, request: Request) -> Response:
        now = timezone.now()
        data = {"generated_at": now, "windows": figures.summary(now, **_filters(request))}
        return Response(serializers.SummarySerializer(data).data)


class SeriesView(APIView):
    """Totals per hour (the last `hours`, default 24) or per day (the last `days`, default 30)."""

    @extend_schema(
        parameters=[
            OpenApiParameter("period", str, enum=["hourly", "daily"], default="hourly"),
            OpenApiParameter("hours", int, description="hourly: how many hours (1-192)"),
            OpenApiParameter("days", int, description="daily: how many days (1-400)"),
            *FILTER_PARAMETERS,
        ],
        responses=serializers.SeriesSerializer,
    )
    def get(self, request: Request) -> Response:
        period = request.query_params.get("period", "hourly")
        filters = _filters(request)
        if period == "daily":
            days = _bounded(request, "days", 30, 400)
            points = [
                {"start": datetime.combine(day, time.min, UTC), "totals": totals}
                for day, totals in figures.daily_series(days=days, **filters)
            ]
        elif period == "hourly":
            hours = _bounded(request, "hours", 24, 192)
            points = [
                {"start": start, "totals": totals} for start, totals in figures.hourly_series(hours=hours, **filters)
            ]
        else:
            return Response({"period": ["hourly or daily"]}, status=status.HTTP_400_BAD_REQUEST)
        return Response(serializers.SeriesSerializer({"period": period, "points": points}).data)


class TopView(APIView):
    """The repositories most pulled, and those with the most bandwidth saved."""

    @extend_schema(
        parameters=[OpenApiParameter("days", int, default=30), OpenApiParameter("limit", int, default=10)],
        responses=serializers.TopSerializer,
    )
    def get(self, request: Request) -> Response:
        days, limit = _bounded(request, "days", 30, 400), _bounded(request, "limit", 10, 100)
        data = {
            "days": days,
            "by_pulls": figures.top_repositories(days=days, limit=limit, by="pulls"),
            "by_bandwidth_saved": figures.top_repositories(days=days, limit=limit, by="saved"),
        }
        return Response(serializers.TopSerializer(data).data)


class CacheView(APIView):
    """The cache's size against its quota, what it holds, and its largest images."""

    @extend_schema(responses=serializers.CacheSerializer)
    def get(self, request: Request) -> Response:
        return Response(serializers.CacheSerializer(figures.cache_figures()).data)


def _bounded(request: Request, name: str, default: int, maximum: int) -> int:
    value = request.query_params.get(name, "")
    return min(max(int(value), 1), maximum) if value.isdigit() else default


class AccountViewSet(viewsets.ViewSet):
    """Upstream accounts: which is in use, its credentials' state, rate limit and upstream health.
    Secrets are never part of an answer."""

    @extend_schema(responses=serializers.AccountSerializer(many=True))
    def list(self, request: Request) -> Response:
        return Response(serializers.AccountSerializer(figures.accounts(), many=True).data)


class UpstreamEventViewSet(viewsets.ReadOnlyModelViewSet):
    """Recent upstream errors, digest mismatches and rejected credentials, newest first."""

    queryset = UpstreamEvent.objects.order_by("-at", "-pk")
    serializer_class = serializers.UpstreamEventSerializer


class RepositoryViewSet(viewsets.ReadOnlyModelViewSet):
    """Cached repositories (`?upstream=`, `?name=`)."""

    serializer_class = serializers.RepositorySerializer

    def get_queryset(self):
        queryset = (
            Repository.objects.select_related("upstream")
            .annotate(tag_count=Count("tags", distinct=True), manifest_count=Count("manifests", distinct=True))
            .order_by("upstream__name", "name")
        )
        params = self.request.query_params
        if "upstream" in params:
            queryset = queryset.filter(upstream__name=params["upstream"])
        if "name" in params:
            queryset = queryset.filter(name=params["name"])
        return queryset


class TagViewSet(viewsets.ReadOnlyModelViewSet):
    """Cached tags (`?repository=` a name, `?upstream=`)."""

    serializer_class = serializers.TagSerializer

    def get_queryset(self):
        queryset = Tag.objects.select_related("repository__upstream", "manifest").order_by("repository__name", "name")
        params = self.request.query_params
        if "repository" in params:
            queryset = queryset.filter(repository__name=params["repository"])
        if "upstream" in params:
            queryset = queryset.filter(repository__upstream__name=params["upstream"])
        return queryset


class PrefetchJobViewSet(mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    """Prefetch jobs, newest first (`?status=`). POST `{"image": "library/nginx:1.27",
    "platforms": ["linux/amd64"]}` queues one; GET it again to follow its progress."""

    serializer_class = serializers.PrefetchJobSerializer
    write_permissions = {"POST": ["registry.add_prefetchjob"]}

    def get_queryset(self):
        queryset = PrefetchJob.objects.select_related("upstream").order_by("-created_at", "-pk")
        if "status" in self.request.query_params:
            queryset = queryset.filter(status=self.request.query_params["status"])
        return queryset


class PinViewSet(mixins.CreateModelMixin, mixins.DestroyModelMixin, viewsets.ReadOnlyModelViewSet):
    """Pinned images (never evicted). POST `{"image": "library/postgres:17"}` pins, DELETE unpins."""

    queryset = Pin.objects.select_related("upstream").order_by("repository", "reference")
    serializer_class = serializers.PinSerializer
    write_permissions = {"POST": ["registry.add_pin"], "DELETE": ["registry.delete_pin"]}


class GcRunViewSet(viewsets.ReadOnlyModelViewSet):
    """Garbage collection runs, newest first, with what each evicted and freed."""

    queryset = GcRun.objects.order_by("-started_at")
    serializer_class = serializers.GcRunSerializer


class EvictionView(APIView):
    """Evict cached images now: `{"images": ["library/alpine:3.20", "library/alpine@sha256:…"]}`.
    Pinned images stay; blobs used within the grace period stay until a later collection."""

    write_permissions = {"POST": ["registry.delete_manifest"]}

    @extend_schema(
        request=serializers.EvictionSerializer,
        responses={200: serializers.EvictionSerializer, 409: OpenApiTypes.OBJECT},
    )
    def post(self, request: Request) -> Response:
        payload = serializers.EvictionSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        try:
            plan, run = gc.evict(payload.validated_data["images"], trigger=f"api: {request.user.get_username()}")
        except gc.GcBusy as busy:
            return Response({"detail": str(busy)}, status=status.HTTP_409_CONFLICT)
        return Response(serializers.EvictionSerializer({"notes": plan.notes, "gc_run": run}).data)


@csrf_exempt  # it changes nothing: a DELETE gets the same 404 (not the CSRF failure page)
def not_found(request, *args, **kwargs) -> JsonResponse:
    """Any other path under /api/: JSON like the API's other answers, not Django's HTML page."""
    return JsonResponse({"detail": "Not found."}, status=404)
