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
