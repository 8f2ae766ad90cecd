"""Upstream answers that something does not exist, remembered for a short while.

A misspelt image in a CI loop would otherwise cost an upstream request per attempt. For
MIRROR_NEGATIVE_CACHE_TTL seconds, a 404 for a tag is answered again from memory, and so is
a repository the upstream said it does not know (404 NAME_UNKNOWN, or the 401/403 Docker Hub
answers for repositories that do not exist) for any tag of it. Each process remembers its
own answers: at worst one upstream request per process and period.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from registry import oci
from registry.memory import AnswerMemory
from registry.upstreams.client import CredentialsRejected

_answers: AnswerMemory[Remembered] = AnswerMemory(4 * 1024 * 1024)

# Answers about a whole repository, and about one reference in it.
REPOSITORY_ANSWERS = (oci.NameUnknown, oci.Unauthorized, oci.Denied)
REFERENCE_ANSWERS = (oci.ManifestUnknown,)


@dataclass(frozen=True)
class Remembered:
    error: type[oci.RegistryError]
    message: str


def recall(upstream_id: int, repository: str, reference: str | None) -> None:
    """Raise the remembered answer, if any, for the repository or this reference in it."""
    keys = [(upstream_id, repository, None)] + ([(upstream_id, repository, reference)] if reference else [])
    for key in keys:
        found = _answers.get(key)
        if found is not None:
            raise found.error(found.message, {"remembered": True})


def remember(upstream_id: int, repository: str, reference: str | None, error: oci.RegistryError) -> None:
    ttl = settings.MIRROR_NEGATIVE_CACHE_TTL
    if ttl <= 0 or isinstance(error, CredentialsRejected):  # the account's fault, not an answer about the image
        return
    if isinstance(error, REPOSITORY_ANSWERS):
        key = (upstream_id, repository, None)
    elif isinstance(error, REFERENCE_ANSWERS) and reference is not None:
        key = (upstream_id, repository, reference)
    else:
        return
    _answers.put(key, Remembered(type(error), error.message), len(repository) + 64, ttl=ttl)
