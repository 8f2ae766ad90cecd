"""Reads the environment once into the typed, frozen Settings of the schema.

The values are parsed by django-environ, as they always were (a `$NAME` value names another
variable; floats forgive stray characters), behind the schema: a malformed value is an error
that names its variable, and so is a boolean that is none of the spellings below.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
import dataclasses
import functools
import os
from pathlib import Path
from types import MappingProxyType
import typing
from typing import Any

import environ

from mirrorsite.config.fields import Declaration, Derived, declaration
from mirrorsite.config.schema import DatabaseConfig, Settings

TRUE_WORDS = frozenset(environ.Env.BOOLEAN_TRUE_STRINGS)  # true, on, ok, y, yes, 1
FALSE_WORDS = frozenset({"false", "off", "no", "n", "0", ""})


class ConfigError(ValueError):
    """An environment variable whose value cannot be what its setting is."""


def _boolean(env: environ.Env, name: str, default: bool) -> bool:
    raw = env.ENVIRON.get(name)
    if raw is not None and not raw.startswith("$"):  # `$NAME`: django-environ reads NAME instead
        try:
            int(raw)  # any integer: zero is false (django-environ's rule)
        except ValueError:
            if raw.strip().lower() not in TRUE_WORDS | FALSE_WORDS:
                raise ConfigError(f"{name}={raw!r} is not a boolean: use true/false, 1/0, yes/no or on/off") from None
    return env.bool(name, default=default)


def _database(env: environ.Env, name: str, default: str) -> DatabaseConfig:
    return MappingProxyType(env.db_url(name, default=default))


def _path(env: environ.Env, name: str, default: Path) -> Path:
    return Path(env.str(name, default=str(default))).resolve()


def _list(env: environ.Env, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(env.list(name, default=list(default)))


READERS: dict[Any, Callable[[environ.Env, str, Any], Any]] = {
    str: lambda env, name, default: env.str(name, default=default),
    int: lambda env, name, default: env.int(name, default=default),
    float: lambda env, name, default: env.float(name, default=default),
    bool: _boolean,
    tuple[str, ...]: _list,
    Path: _path,
    DatabaseConfig: _database,
}
KIND_NAMES = {str: "a string", int: "an integer", float: "a number", tuple[str, ...]: "a list", Path: "a path"}


@functools.cache
def fields() -> tuple[tuple[dataclasses.Field, Any, Declaration], ...]:
    """The schema's settings in order, each with its type and declaration."""
    hints = typing.get_type_hints(Settings)
    unreadable = [field.name for field in dataclasses.fields(Settings) if hints[field.name] not in READERS]
    if unreadable:
        raise TypeError(f"settings of a type the loader cannot read: {unreadable}")
    return tuple((field, hints[field.name], declaration(field)) for field in dataclasses.fields(Settings))


def load(environment: Mapping[str, str] | None = None) -> Settings:
    """Every setting from `environment` (default: the process's), or ConfigError naming the variable."""
    env = environ.Env()
    env.ENVIRON = os.environ if environment is None else environment
    values: dict[str, Any] = {}
    for field, kind, declared in fields():
        default = declared.default
        if isinstance(default, Derived):
            default = default.compute(values)
        try:
            value = READERS[kind](env, field.name, default)
        except ConfigError:
            raise
        except (ValueError, TypeError, environ.ImproperlyConfigured) as error:
            raw = env.ENVIRON.get(field.name)
            expected = KIND_NAMES.get(kind, "a database URL")
            raise ConfigError(f"{field.name}={raw!r} is not {expected}: {error}") from None
        if declared.case == "lower":
            value = value.lower()
        elif declared.case == "upper":
            value = value.upper()
        values[field.name] = value
    return Settings(**values)
