"""Whether each upstream answered lately: shown on /readyz and in the admin.

Requests and account verification both report here. The upstream's row is written when what
this process saw changes, and otherwise at most once a minute, so a busy mirror does not
write it on every request.
"""

from __future__ import annotations

import logging

from django.db import DatabaseError
from django.utils import timezone

from registry.memory import AnswerMemory
from registry.models import Upstream

logger = logging.getLogger(__name__)

REWRITE_AFTER = 60.0
_written: AnswerMemory[bool] = AnswerMemory(256 * 1024)  # upstream pk -> what this process wrote


def note(upstream: Upstream, reachable: bool, message: str = "") -> None:
    if _written.get(upstream.pk) is reachable:
        return
    _written.put(upstream.pk, reachable, 16, ttl=REWRITE_AFTER)
    if not reachable:
        logger.warning("upstream %s unreachable: %s", upstream.name, message)
    try:
        Upstream.objects.filter(pk=upstream.pk).update(
            reachable=reachable, checked_at=timezone.now(), check_message=message[:300]
        )
    except DatabaseError:
        logger.warning("could not record whether upstream %s answers", upstream.name, exc_info=True)
