"""How one setting is declared: its default (fixed, or derived from settings read before it),
the default as the manual shows it, its description, and the case its value is folded to."""

from __future__ import annotations

from collections.abc import Callable, Mapping
import dataclasses
from typing import Any, Literal

Case = Literal["lower", "upper"]


@dataclasses.dataclass(frozen=True)
class Derived:
    """A default computed from the values of settings declared earlier (read by name)."""

    compute: Callable[[Mapping[str, Any]], Any]


@dataclasses.dataclass(frozen=True)
class Declaration:
    default: Any
    description: str
    shown: str | None  # the default as the manual writes it; None: written from the value
    case: Case | None


def setting(default: Any, description: str, *, shown: str | None = None, case: Case | None = None) -> Any:
    """A field of the settings schema, named after its environment variable, typed by its annotation."""
    if isinstance(default, Derived) and shown is None:
        raise TypeError("a derived default needs the text the manual shows for it")
    return dataclasses.field(metadata={"setting": Declaration(default, " ".join(description.split()), shown, case)})


def declaration(field: dataclasses.Field) -> Declaration:
    return field.metadata["setting"]
