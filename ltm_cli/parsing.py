"""Values people and LLMs type: times, key=value metadata, numeric limits. Shared by every face of ltm."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from ltm_cli.errors import InvalidInputError


def parse_time(value: str | dt.datetime | None) -> dt.datetime | None:
    """ISO 8601 date or date-time (or a datetime); without a zone it is local time."""
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        parsed = value
    else:
        try:
            parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError as exc:
            raise InvalidInputError(f"invalid time {value!r}",
                                    hint="use ISO 8601, e.g. 2026-11-25T14:30") from exc
    return parsed if parsed.tzinfo else parsed.astimezone()


def parse_meta(items: Iterable[str] | Mapping[str, Any] | None) -> dict[str, Any]:
    """key=value pairs (values that are JSON, such as numbers and true, stay typed), or a mapping as it is."""
    if isinstance(items, Mapping):
        return dict(items)
    from ltm_cli.services.settings import parse_value

    meta: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidInputError(f"--meta expects key=value, got {item!r}")
        meta[key.strip()] = parse_value(value)
    return meta


def check_range(name: str, value: int | None, low: int, high: int | None = None) -> int | None:
    """A numeric option within [low, high], else exit 4 naming the bounds."""
    if value is None:
        return None
    if value < low or (high is not None and value > high):
        bounds = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise InvalidInputError(f"{name} must be {bounds}, got {value}")
    return value
