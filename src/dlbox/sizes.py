"""Sizes like 512m or 8g. Pure, and light to import (no pydantic) for fast commands."""

from __future__ import annotations

import re
from typing import Any

_SIZE = re.compile(r"^(\d+(?:\.\d+)?)([kmgt]?)b?$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_size(value: Any) -> int:
    """'8g' / '512m' / 1073741824 -> bytes."""
    if isinstance(value, bool):
        raise ValueError("expected a size like 512m or 8g")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError("must be positive")
        return value
    match = _SIZE.match(str(value).strip())
    if not match:
        raise ValueError(f"{value!r} is not a size; use a number with k, m, g or t (e.g. 512m, 8g)")
    size = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if size <= 0:
        raise ValueError("must be positive")
    return size


def format_size(size: int) -> str:
    for unit in ("t", "g", "m", "k"):
        if size % _UNITS[unit] == 0:
            return f"{size // _UNITS[unit]}{unit}"
    return str(size)


_DURATION = re.compile(r"^(\d{1,7})([smhd])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
OFF = ("off", "never", "0")


def parse_duration(value: Any) -> int:
    """'90s' / '30m' / '2h' / '1d' -> seconds (an int of seconds too); 'off' -> 0, never."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 90s, 30m or 2h")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("must not be negative")
        return value
    text = str(value).strip().lower()
    if text in OFF:
        return 0
    match = _DURATION.match(text)
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"{str(value)[:40]!r} is not a duration; use a number with s, m, h or d (90s, 30m, 2h), "
                         "or off")
    return int(match.group(1)) * _SECONDS[match.group(2)]


def format_duration(seconds: float) -> str:
    """Seconds as people read them: exact units where they fit (2h, 30m, 90s), else rounded down (2h5m, 12m)."""
    seconds = int(seconds)
    for unit in ("d", "h", "m"):
        if seconds >= _SECONDS[unit] and seconds % _SECONDS[unit] == 0:
            return f"{seconds // _SECONDS[unit]}{unit}"
    if seconds >= 3600:
        return f"{seconds // 3600}h{(seconds % 3600) // 60}m"
    if seconds >= 600:
        return f"{seconds // 60}m"
    return f"{seconds}s"
