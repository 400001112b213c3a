"""The deploy stage's hook point.

`deploy(store, model_version)` is called by a pipeline's `deploy` stage for a blessed version that has
just become the champion (never for a rejected one). It answers None when no serving deployment
follows this model, and the stage records "skipped: no deployment follows this model"; otherwise it
answers a one-line note of what it did, recorded as the stage's result.

Today no deployments exist (serving is built on another branch), so this is a no-op. The serving work
replaces the body: find the deployments that follow `model_version.owner`/`model_version.name` at the
`champion` alias and move them to `model_version` with the zero-downtime promotion, raising a
DlboxError with a one-line reason when that fails (the stage, and so the pipeline, then fails; the alias
has already moved, which the report says).
"""

from __future__ import annotations


def deploy(store, model_version) -> str | None:  # noqa: ARG001 - the interface serving will fill in
    return None
