"""Built-in specs. Each file is a complete dlbox.yaml with a tested set of pins."""

from __future__ import annotations

from importlib import resources

from dlbox.errors import UsageError


def names() -> list[str]:
    return sorted(p.name.removesuffix(".yaml") for p in resources.files(__name__).iterdir() if p.name.endswith(".yaml"))


def text(name: str) -> str:
    if name not in names():
        raise UsageError(f"--preset: unknown preset {name!r}; allowed: {', '.join(names())}")
    return resources.files(__name__).joinpath(f"{name}.yaml").read_text()


def summary(name: str) -> str:
    first = text(name).splitlines()[0]
    return first.removeprefix("# ").strip()
