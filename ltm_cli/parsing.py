"""Values people and LLMs type: times, key=value metadata, numeric limits. Shared by every face of ltm."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from ltm_cli.errors import InvalidInputError

PERIOD_DAYS = {"d": 1, "w": 7, "m": 30, "y": 365}  # a month is 30 days, a year 365: periods, not calendar dates
_AGO = re.compile(r"^\s*(\d{1,9})\s*([hdwmy])\s*$", re.IGNORECASE)
_AGO_HOURS = {"h": 1, **{unit: 24 * days for unit, days in PERIOD_DAYS.items()}}  # as retention counts them
TIME_HINT = "use ISO 8601 (2026-11-25T14:30) or a period back from now (2h, 7d, 12w, 6m, 1y)"


def parse_time(value: str | dt.datetime | None) -> dt.datetime | None:
    """ISO 8601 date or date-time (or a datetime), without a zone in local time; or a period back from now:
    2h, 7d, 12w, 6m (30 days each), 1y (365 days), as `forget --before` and retention settings read them."""
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        parsed = value
    elif ago := _AGO.match(str(value)):
        try:
            return dt.datetime.now(dt.UTC) - dt.timedelta(hours=int(ago.group(1)) * _AGO_HOURS[ago.group(2).lower()])
        except (ValueError, OverflowError) as exc:
            raise InvalidInputError(f"time {value!r} is out of range", hint=TIME_HINT) from exc
    else:
        try:
            parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError as exc:
            raise InvalidInputError(f"invalid time {value!r}", hint=TIME_HINT) from exc
    try:
        return parsed if parsed.tzinfo else parsed.astimezone()
    except (ValueError, OverflowError) as exc:  # 0001-01-01 in a zone east of UTC leaves year 1
        raise InvalidInputError(f"time {value!r} is out of range", hint="use a date between years 2 and 9998") \
            from exc


def parse_meta(items: Iterable[str] | Mapping[str, Any] | None) -> dict[str, Any]:
    """key=value pairs (values that are JSON, such as numbers and true, stay typed), or a mapping as it is."""
    if isinstance(items, Mapping):
        return dict(items)
    if isinstance(items, str):  # one key=value, not one per character
        items = [items]
    from ltm_cli.services.settings import parse_value

    meta: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidInputError(f"--meta expects key=value, got {item!r}")
        meta[key.strip()] = parse_value(value)
    return meta


MAX_COUNT = 2**31 - 1  # the largest count a database parameter holds


def check_range(name: str, value: int | None, low: int, high: int | None = MAX_COUNT) -> int | None:
    """A numeric option within [low, high], else exit 4 naming the bounds."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(f"{name} must be a whole number, got {value!r}")
    if value < low or (high is not None and value > high):
        bounds = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise InvalidInputError(f"{name} must be {bounds}, got {value}")
    return value


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.I)


def parse_size(value: str | int, name: str = "size") -> int:
    """Bytes from 1048576, 64MB, 64M, 1.5GiB (binary multiples: 1MB = 1024 kB, as file managers show)."""
    if isinstance(value, int):
        return value
    match = _SIZE.match(value)
    if not match:
        raise InvalidInputError(f"{name}: invalid size {value!r}", hint="e.g. 500k, 64MB, 2G")
    number, unit = float(match.group(1)), match.group(2).lower()
    return int(number * 1024 ** " kmgt".index(unit or " "))


def human_size(size: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return str(size)  # pragma: no cover


def read_limited(stream: IO[bytes], limit: int, what: str) -> bytes:
    """At most `limit` bytes from a stream that may never end (/dev/zero, a FIFO): more is refused, exit 4."""
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise InvalidInputError(f"{what} is over the {human_size(limit)} input limit",
                                hint="raise it with LTM_MAX_INPUT_SIZE (e.g. 1GB) if you mean it")
    return data


def read_text(path: str | os.PathLike[str], limit: int, what: str | None = None) -> str:
    """A UTF-8 text file, or standard input for "-", read up to `limit` bytes (LTM_MAX_INPUT_SIZE): a FIFO, a
    device or an endless pipe never hangs or exhausts memory, it is refused with exit 4."""
    import stat
    import sys

    path = os.fspath(path)
    if path == "-":
        stream = sys.stdin.buffer if hasattr(sys.stdin, "buffer") else None
        data = read_limited(stream, limit, "standard input") if stream else sys.stdin.read(limit + 1).encode()
        source = "standard input"
    else:
        source = what or path
        try:
            if not stat.S_ISREG(os.stat(path).st_mode):
                raise InvalidInputError(f"{source}: not a regular file")
            with open(path, "rb") as handle:
                data = read_limited(handle, limit, source)
        except OSError as exc:
            raise InvalidInputError(f"cannot read {source}: {exc.strerror}") from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{source} is not UTF-8 text") from exc


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    """A binary file that appears at `path` only complete: written beside it, synced and renamed into place;
    on any failure the partial file is removed. A path that cannot be written (no such folder, a directory, no
    permission) is refused before anything is written, as one line naming the path: exit 4."""
    import tempfile

    target = Path(path)
    if target.is_dir():
        raise InvalidInputError(f"cannot write {target}: it is a directory")
    try:
        handle, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise InvalidInputError(f"cannot write {target}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(handle, "wb") as raw:
            yield raw
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise InvalidInputError(f"cannot write {target}: {exc.strerror or exc}") from exc
        raise
