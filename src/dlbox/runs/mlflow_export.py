"""Export a dlbox run record to an MLflow tracking server, over MLflow's REST API.

The run carries the tags MLflow's own tooling reads (`mlflow.docker.image.id`,
`mlflow.source.git.commit`) plus dlbox's lock hash, and its params and full metric history.
"""

from __future__ import annotations

import calendar
import time

import httpx

from dlbox import redact
from dlbox.errors import DlboxError

STATUS = {"succeeded": "FINISHED", "failed": "FAILED", "oom-killed": "FAILED", "lost": "FAILED",
          "cancelled": "KILLED"}


def _ms(iso: str | None) -> int | None:
    if not iso:
        return None
    seconds, _, fraction = iso.rstrip("Z").partition(".")
    whole = calendar.timegm(time.strptime(seconds, "%Y-%m-%dT%H:%M:%S"))
    return whole * 1000 + int((fraction or "0")[:3].ljust(3, "0"))


def tags(record: dict) -> dict[str, str]:
    found = {
        "mlflow.docker.image.id": record["image_id"],
        "mlflow.docker.image.name": record["image"],
        "mlflow.source.type": "JOB",
        "mlflow.source.name": " ".join(redact.words(record["command"]))[:500],
        "mlflow.user": record["user"],
        "dlbox.run_id": record["id"],
        "dlbox.lock_hash": record.get("lock_hash") or "",
        "dlbox.state": record["state"],
    }
    if record.get("git_commit"):
        found["mlflow.source.git.commit"] = record["git_commit"]
        found["dlbox.git_dirty"] = str(bool(record.get("git_dirty"))).lower()
    return found


class MlflowClient:
    def __init__(self, uri: str):
        if not uri.startswith(("http://", "https://")):
            raise DlboxError(f"--mlflow: {uri!r} is not an http(s) tracking server URI")
        self.http = httpx.Client(base_url=uri.rstrip("/") + "/api/2.0/mlflow/", timeout=30)

    def call(self, method: str, path: str, **kwargs) -> dict:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise DlboxError(f"--mlflow: cannot reach the tracking server: {exc}") from None
        if response.status_code >= 400:
            try:
                detail = response.json().get("message", response.text)
            except ValueError:
                detail = response.text[:200]
            raise DlboxError(f"--mlflow: {path} answered {response.status_code}: {detail}")
        return response.json()

    def experiment_id(self, name: str) -> str:
        try:
            return self.call("GET", "experiments/get-by-name", params={"experiment_name": name})["experiment"][
                "experiment_id"]
        except DlboxError as exc:
            if "RESOURCE_DOES_NOT_EXIST" not in exc.message and "404" not in exc.message:
                raise
        return self.call("POST", "experiments/create", json={"name": name})["experiment_id"]


def export(record: dict, uri: str, experiment: str = "dlbox") -> dict:
    client = MlflowClient(uri)
    experiment_id = client.experiment_id(experiment)
    start = _ms(record.get("started_at")) or _ms(record["submitted_at"])
    created = client.call("POST", "runs/create", json={
        "experiment_id": experiment_id, "start_time": start, "run_name": record.get("name") or record["id"],
        "tags": [{"key": k, "value": v} for k, v in tags(record).items()]})
    run_id = created["run"]["info"]["run_id"]
    end = _ms(record.get("ended_at")) or start
    metrics = [{"key": m["name"], "value": m["value"], "timestamp": end, "step": m["step"] or 0}
               for m in record["metric_history"]]
    # the API's records are redacted already; an MLflow server is another audience, so again here
    params = [{"key": k, "value": str(v)[:6000]} for k, v in redact.mapping(record["params"]).items()]
    for i in range(0, max(len(metrics), 1), 1000):  # MLflow takes at most 1000 metrics per batch
        client.call("POST", "runs/log-batch", json={"run_id": run_id, "metrics": metrics[i:i + 1000],
                                                     "params": params if i == 0 else []})
    if record["state"] in STATUS:
        client.call("POST", "runs/update", json={"run_id": run_id, "status": STATUS[record["state"]],
                                                 "end_time": end})
    return {"run": record["id"], "mlflow_run_id": run_id, "experiment_id": experiment_id, "uri": uri}
