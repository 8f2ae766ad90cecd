"""The /v2/ pull API: route (which checks the name), parse, authorize, make one call into the
proxy, turn the result into a response."""

from __future__ import annotations

from urllib.parse import quote, urlencode

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse

from registry import oci
from registry.api.policy import authorize, readable_repositories, repository_is_private
from registry.api.responses import blob_hit_response, error_response, parse_range, registry_endpoint
from registry.models import Upstream
from registry.proxy import blobs, listings, manifests
from registry.upstreams import routing
from registry.upstreams.routing import Route

STALE_WARNING = '110 mirrorsite "Response is Stale"'
IMMUTABLE = "public, max-age=31536000, immutable"
# A redirect to a presigned URL is good only until the URL expires: never kept.
NOT_KEPT = "no-store"


def request_upstream(request: HttpRequest) -> Upstream:
    """The upstream a request without a repository name (the catalog) is for: by `ns`, else
    the default. Requests for a repository are routed with `routing.route`, which also takes
    path prefixes into account."""
    return routing.route(request, None).upstream


@registry_endpoint
def base(request: HttpRequest) -> HttpResponse:
    authorize(request, None)
    return JsonResponse({})


@registry_endpoint
def manifest(request: HttpRequest, name: str, reference: str) -> HttpResponse:
    route = routing.route(request, name)
    parsed = oci.parse_reference(reference)
    authorize(request, route)
    result = manifests.get_manifest(route, parsed)
    response = HttpResponse(b"" if request.method == "HEAD" else result.content, content_type=result.media_type)
    response["Content-Length"] = str(len(result.content))
    response["Docker-Content-Digest"] = result.digest
    response["ETag"] = f'"{result.digest}"'
    if parsed.digest is not None:
        response["Cache-Control"] = IMMUTABLE
    if result.stale_reason:
        response["Warning"] = STALE_WARNING
    return response


@registry_endpoint
def blob(request: HttpRequest, name: str, digest: str) -> HttpResponse:
    route = routing.route(request, name)
    parsed = oci.parse_digest(digest)
    authorize(request, route)  # before the cache is looked at: a refused client learns nothing of it
    reader = blob_reader(request)
    if request.method == "HEAD":
        size = blobs.stat_blob(route, parsed, reader=reader)
        response = HttpResponse(b"", content_type="application/octet-stream")
        response["Content-Length"] = str(size)
    else:
        response = _blob_content(route, parsed, request.headers.get("Range"), reader)
    response["Docker-Content-Digest"] = str(parsed)
    response["ETag"] = f'"{parsed}"'
    response["Accept-Ranges"] = "bytes"
    response["Cache-Control"] = NOT_KEPT if response.status_code in (301, 302, 303, 307, 308) else IMMUTABLE
    return response


def blob_reader(request: HttpRequest) -> blobs.BlobReader:
    """The client's reach, for the cache's decision on blobs first cached for another repository."""

    def may_read(upstream: Upstream, repository: str) -> bool:
        try:
            authorize(request, Route(upstream, repository))
        except oci.RegistryError:
            return False
        return True

    return blobs.BlobReader(may_read=may_read, is_private=repository_is_private)


def _blob_content(route: Route, digest: oci.Digest, range_header: str | None, reader: blobs.BlobReader) -> HttpResponse:
    found = blobs.fetch_blob(route, digest, reader=reader)
    if isinstance(found, blobs.CachedBlob):
        try:
            return blob_hit_response(found.location, found.size, range_header)
        except FileNotFoundError:  # evicted between the lookup and the open: a miss after all
            found = blobs.fetch_blob(route, digest, reader=reader)
            if isinstance(found, blobs.CachedBlob):
                return blob_hit_response(found.location, found.size, range_header)
    if found.size is not None:
        try:  # refuse an impossible range now; a possible one is answered with the whole blob
            parse_range(range_header, found.size)
        except oci.RangeNotSatisfiable:
            found.chunks.close()
            raise
    response = StreamingHttpResponse(found.chunks, content_type="application/octet-stream")
    if found.size is not None:
        response["Content-Length"] = str(found.size)
    return response


@registry_endpoint
def tags_list(request: HttpRequest, name: str) -> HttpResponse:
    route = routing.route(request, name)
    n, last = _pagination(request)
    authorize(request, route)
    page = listings.list_tags(route, n, last)
    response = JsonResponse({"name": name, "tags": page.tags})
    _link_next(response, f"/v2/{name}/tags/list", n, page.next_last)
    if page.stale:
        response["Warning"] = STALE_WARNING
    return response


@registry_endpoint
def catalog(request: HttpRequest) -> HttpResponse:
    authorize(request, None)
    n, last = _pagination(request)
    upstream = routing.route(request, None).upstream
    page = listings.list_repositories(upstream, n, last)
    response = JsonResponse({"repositories": readable_repositories(request, upstream, page.tags)})
    _link_next(response, "/v2/_catalog", n, page.next_last)
    return response


@registry_endpoint
def referrers(request: HttpRequest, name: str, digest: str) -> HttpResponse:
    route = routing.route(request, name)
    authorize(request, route)
    oci.parse_digest(digest)
    # Upstream referrers are not proxied yet: an empty index is a valid answer.
    return JsonResponse({"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": []}, content_type=oci.OCI_INDEX)


@registry_endpoint
def unsupported(request: HttpRequest, **_: str) -> HttpResponse:
    raise oci.Unsupported("this mirror is read-only: pushes and deletes are not supported")


@registry_endpoint
def unknown_endpoint(request: HttpRequest) -> HttpResponse:
    return error_response(oci.NameUnknown("no such registry endpoint", status=404), request.method)


def _pagination(request: HttpRequest) -> tuple[int | None, str | None]:
    n = request.GET.get("n")
    last = request.GET.get("last") or None
    if n is None or n == "":
        return None, last
    if not (n.isascii() and n.isdigit()) or len(n) > 18:  # isdigit() alone admits "²"
        raise oci.PaginationInvalid("n must be a non-negative integer", {"n": n[:20]})
    return min(int(n), settings.MIRROR_TAG_PAGE_MAX), last


def _link_next(response: HttpResponse, path: str, n: int | None, next_last: str | None) -> None:
    if next_last is None:
        return
    query = urlencode({key: value for key, value in (("n", n), ("last", next_last)) if value is not None})
    response["Link"] = f'<{quote(path)}?{query}>; rel="next"'
