"""Listings, pulled through: a repository's tags (the upstream's, page by page, remembered for
a while) and the catalog (what is cached from an upstream)."""

from __future__ import annotations

from dataclasses import dataclass
import json
import logging

from django.conf import settings

from registry import oci
from registry.memory import AnswerMemory
from registry.models import Repository, Tag, Upstream
from registry.proxy.upstream_calls import STALE_SERVABLE, single_flight, upstream_client
from registry.upstreams.client import UpstreamUnavailable
from registry.upstreams.routing import Route

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TagPage:
    tags: list[str]
    next_last: str | None  # set when there is a further page
    stale: bool = False


class UpstreamTooLarge(oci.RegistryError):
    """An upstream answer past the size the mirror accepts for it."""

    code, status = "SIZE_INVALID", 502


# Tag lists are asked of the upstream at most once per MIRROR_TAG_LIST_TTL seconds, process and
# page; what is remembered is bounded in bytes (a list costs a few times its JSON in memory).
_tag_lists: AnswerMemory[TagPage] = AnswerMemory(32 * 1024 * 1024)
TAG_LIST_MEMORY_FACTOR = 4


def list_tags(route: Route, n: int | None, last: str | None) -> TagPage:
    """The upstream's tags in lexical order, page by page; the cached ones when the upstream
    is unreachable. Pagination is applied here too, as not every upstream honours n/last.
    An upstream tag list larger than MIRROR_TAG_LIST_MAX_BYTES is refused (502), never read
    whole: a list cut short would say tags do not exist that do."""
    upstream, repo_name = route.upstream, route.repository
    if n == 0:
        return TagPage([], None)
    key = (upstream.pk, repo_name, n, last)
    remembered = _tag_lists.get(key)
    if remembered is not None:
        return remembered
    with single_flight(f"tags:{upstream.pk}:{repo_name}:{n}:{last}"):
        remembered = _tag_lists.get(key)  # asked while we waited?
        if remembered is not None:
            return remembered
        page, size = _fetch_tag_page(upstream, repo_name, n, last)
        if not page.stale:
            _tag_lists.put(key, page, size * TAG_LIST_MEMORY_FACTOR, ttl=settings.MIRROR_TAG_LIST_TTL)
            # What to answer, stale, while the upstream is down (as long as a tag may be served stale).
            _tag_lists.put(("last", *key), page, size * TAG_LIST_MEMORY_FACTOR, ttl=upstream.max_staleness_seconds())
        return page


def _fetch_tag_page(upstream: Upstream, repo_name: str, n: int | None, last: str | None) -> tuple[TagPage, int]:
    limit = settings.MIRROR_TAG_LIST_MAX_BYTES
    try:
        response = upstream_client(upstream).get_tags(repo_name, n, last, limit)
    except oci.ManifestInvalid:  # what the client says of an answer past the limit
        logger.warning("upstream %s sent a tag list of %s larger than %d bytes", upstream.name, repo_name, limit)
        raise UpstreamTooLarge(
            "the upstream's tag list is larger than this mirror accepts", {"max_bytes": limit}
        ) from None
    except STALE_SERVABLE:
        if not upstream.serves_stale:
            raise
        answered = _tag_lists.get(("last", upstream.pk, repo_name, n, last))
        if answered is not None:  # the upstream's last answer for this page
            return TagPage(answered.tags, answered.next_last, stale=True), 0
        cached = list(
            Tag.objects.filter(repository__upstream=upstream, repository__name=repo_name).values_list("name", flat=True)
        )
        if not cached:
            raise
        return _paginate(sorted(cached), n, last, stale=True), 0
    page = _paginate(sorted(_parse_tag_list(response.content)), n, last)
    if page.next_last is None and page.tags and 'rel="next"' in response.headers.get("Link", ""):
        page = TagPage(page.tags, page.tags[-1])
    return page, len(response.content)


def _parse_tag_list(content: bytes) -> list[str]:
    try:
        tags = json.loads(content).get("tags") or []
    except (ValueError, AttributeError):
        raise UpstreamUnavailable("upstream sent an unreadable tag list") from None
    return [tag for tag in tags if isinstance(tag, str)]


def list_repositories(upstream: Upstream, n: int | None, last: str | None) -> TagPage:
    """What is cached from an upstream (the catalog), in lexical order."""
    names = Repository.objects.filter(upstream=upstream).order_by("name")
    if last:
        names = names.filter(name__gt=last)
    limit = n if n is not None else 1000
    page = list(names.values_list("name", flat=True)[: limit + 1])
    return TagPage(page[:limit], page[limit - 1] if len(page) > limit and limit else None)


def _paginate(items: list[str], n: int | None, last: str | None, stale: bool = False) -> TagPage:
    if last:
        items = [item for item in items if item > last]
    if n is None:
        return TagPage(items, None, stale)
    page = items[:n]
    return TagPage(page, page[-1] if len(items) > n and page else None, stale)
