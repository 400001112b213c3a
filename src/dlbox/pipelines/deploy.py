"""The deploy stage: which serving deployments take the new champion.

`deploy(store, model_version)` is called by a pipeline's `deploy` stage for a blessed version that
has just become the champion (never for a rejected one). Deployments are recorded intent that the
service's loop reconciles (`dlbox.deployments`): one that follows this model's `champion` alias is
moved to the new version by that loop, with the zero-downtime promotion (load and warm, switch,
drain, unload). So the stage does not move anything itself; it names the deployments that will
follow, or answers None when none does and the stage records "skipped: no deployment follows this
model".
"""

from __future__ import annotations

CHAMPION = "champion"


def deploy(store, model_version) -> str | None:
    following = sorted(d.name for d in store.deployments()
                       if d.model_owner == model_version.owner and d.model_name == model_version.name
                       and d.alias == CHAMPION and d.desired == "running")
    if not following:
        return None
    return (f"{len(following)} deployment(s) follow {model_version.name}@{CHAMPION} and move to version "
            f"{model_version.version}: {', '.join(following)}")
