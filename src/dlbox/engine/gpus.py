"""GPU requests and bookkeeping: which GPU IDs belong to which container.

Pure but for the inventory, which runs `nvidia-smi -L` (or reads DLBOX_GPUS). The engine is the
truth about who holds what: callers pass the IDs that running containers hold (from their labels).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

from dlbox.errors import DlboxError, UsageError


def parse(value: str | int | list[str] | None) -> str | int | list[str] | None:
    """--gpus all | N | ID,ID -> "all" | N | [IDs]."""
    if value is None or isinstance(value, (int, list)):
        return value
    text = str(value).strip()
    if text == "all":
        return "all"
    if text.isdigit():
        if int(text) < 1:
            raise UsageError("--gpus: a count must be at least 1")
        return int(text)
    ids = [part.strip() for part in text.split(",")]
    if not all(re.fullmatch(r"[A-Za-z0-9-]+", i) for i in ids):
        raise UsageError(f"--gpus: {value!r} is not 'all', a count, or a comma-separated list of GPU IDs")
    return ids


def inventory() -> list[str]:
    """GPU IDs on this host: DLBOX_GPUS=0,1 when set, else what nvidia-smi lists."""
    declared = os.environ.get("DLBOX_GPUS")
    if declared is not None:
        return [g.strip() for g in declared.split(",") if g.strip()]
    if shutil.which("nvidia-smi") is None:
        return []
    out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=20)
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []


def allocate(request: str | int | list[str], *, available: list[str], held: dict[str, list[str]],
             share: bool = False) -> list[str]:
    """The GPU IDs to give, or an error naming who holds a wanted GPU.

    `held` maps a holder (workspace or job) to its IDs. With `share`, held GPUs may be given again.
    """
    if not available:
        raise DlboxError("--gpus: this host has no GPUs that dlbox knows of (no nvidia-smi; set DLBOX_GPUS=0,1 "
                         "to declare them)", code="no_gpu")
    taken = {gpu: holder for holder, ids in held.items() for gpu in ids}
    free = [g for g in available if share or g not in taken]
    if request == "all":
        wanted = list(available)
    elif isinstance(request, int):
        if request > len(available):
            raise UsageError(f"--gpus: {request} asked, this host has {len(available)}")
        if request > len(free):
            raise DlboxError(f"--gpus: {request} asked, {len(free)} free "
                             f"({', '.join(f'{g} held by {h}' for g, h in sorted(taken.items()))}); "
                             "use --share-gpus to share", code="gpu_busy")
        return free[:request]
    else:
        unknown = [g for g in request if g not in available]
        if unknown:
            raise UsageError(f"--gpus: no GPU {', '.join(unknown)} on this host (has {', '.join(available)})")
        wanted = list(request)
    if not share:
        busy = [f"{g} held by {taken[g]}" for g in wanted if g in taken]
        if busy:
            raise DlboxError(f"--gpus: {', '.join(busy)}; use --share-gpus to share", code="gpu_busy")
    return wanted


def device_request(ids: list[str]) -> dict:
    """The Engine API's DeviceRequest for these GPUs (NVIDIA container toolkit)."""
    return {"Driver": "nvidia", "Count": 0, "DeviceIDs": list(ids), "Capabilities": [["gpu"]], "Options": {}}


def count(request: str | int | list[str] | None, available: list[str]) -> int:
    """How many GPUs a request takes (for quotas)."""
    if request is None:
        return 0
    if request == "all":
        return len(available)
    return request if isinstance(request, int) else len(request)


def choose(request: str | int | list[str] | None, available: list[str], busy: set[str]) -> list[str] | None:
    """The GPU IDs a waiting job gets now, or None while what it asks for is busy. Pure."""
    if request is None:
        return []
    free = [g for g in available if g not in busy]
    if request == "all":
        return list(available) if len(free) == len(available) and available else None
    if isinstance(request, int):
        return free[:request] if len(free) >= request else None
    return list(request) if all(g in free for g in request) else None
