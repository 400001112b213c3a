"""Deployments: `dlbox serve` and `dlbox deployments ls/show/rm/logs`."""

from __future__ import annotations

import click

from dlbox.cli.output import answers, page_options, table


def _body(model, alias, versions, port, grpc_port, host, memory, replicas, name, batch_max, batch_timeout_ms) -> dict:
    """The request, checked here first so a bad flag costs no round trip (the service checks it again)."""
    from dlbox.deployments import intent
    from dlbox.errors import UsageError
    from dlbox.sizes import parse_size

    try:
        size = parse_size(memory) if memory else None
    except ValueError as exc:
        raise UsageError(f"--memory: {exc}") from None
    pinned = intent.parse_versions(versions) if versions is not None else None
    intent.check(intent.Request(model=model, alias=alias, versions=pinned, port=port, grpc_port=grpc_port, host=host,
                                memory=size, replicas=replicas, name=name, batch_max=batch_max,
                                batch_timeout_ms=batch_timeout_ms))
    return {"model": model, "alias": alias, "versions": list(pinned) if pinned else None, "port": port,
            "grpc_port": grpc_port, "host": host, "memory": memory, "replicas": replicas, "name": name,
            "batch_max": batch_max, "batch_timeout_ms": batch_timeout_ms}


def _served(d: dict) -> str:
    if d["labels"]:
        return ", ".join(f"{k}={v}" for k, v in sorted(d["labels"].items()))
    return ",".join(map(str, d["serving"])) or "-"


def print_deployment(d: dict, **_params) -> None:
    follows = f"follows {d['follows']}" if d["follows"] else f"pinned {','.join(map(str, d['pinned'] or []))}"
    click.echo(f"deployment {d['name']}: {d['state']}{' (' + d['health'] + ')' if d['health'] else ''}; "
               f"model {d['model_owner']}/{d['model']}, {follows}; serving {_served(d)}")
    click.echo(f"  REST     {d['rest_url']}/v1/models/{d['model']}   (POST {d['predict_url']})")
    if d["grpc_target"]:
        click.echo(f"  gRPC     {d['grpc_target']}   (tensorflow.serving.PredictionService, model {d['model']})")
    click.echo(f"  restarts {d['restarts']} (engine {d['restart_count']}, started again by dlbox {d['recreated']})")
    if d["batching"]:
        click.echo(f"  batching up to {d['batching']['max']} requests, {d['batching']['timeout_ms']:g} ms")
    if d["last_error"]:
        click.echo(f"  note     {d['last_error']}")


@click.command()
@click.argument("model", metavar="[OWNER/]NAME[:VERSION|@ALIAS]")
@click.option("--alias", help="Follow this alias: when it moves (`dlbox models alias`), the deployment moves too.")
@click.option("--versions", metavar="1,2", help="Pin these versions instead (all loaded, no labels).")
@click.option("--port", type=int, help="The REST port on the host (default: a free one).")
@click.option("--grpc-port", type=int, help="The gRPC port on the host (default: a free one).")
@click.option("--host", help="The host address the ports listen on (default 127.0.0.1; a server chooses its own).")
@click.option("--memory", help="The container's memory limit, e.g. 2g.")
@click.option("--replicas", type=int, default=1, show_default=True, help="Serving containers behind one front (1-8).")
@click.option("--name", help="The deployment's name (default: the model's).")
@click.option("--batch-max", type=int, default=0, help="Server-side batching: up to N requests a batch (off: 0).")
@click.option("--batch-timeout-ms", type=float, help="How long a batch waits to fill (with --batch-max; 2).")
@answers(print_deployment)
def serve(backend, model, alias, versions, port, grpc_port, host, memory, replicas, name, batch_max,
          batch_timeout_ms):
    """Serve a registered model with TF Serving's REST and gRPC APIs, in the image it was trained in.

    \b
      dlbox serve digits --alias champion     follows champion as it moves, zero failed requests
      dlbox serve digits --versions 1,2       pins versions 1 and 2
    The deployment is kept running by the dlbox service (started again if it dies).
    """
    return backend.serve(_body(model, alias, versions, port, grpc_port, host, memory, replicas, name, batch_max,
                               batch_timeout_ms))


@click.group(invoke_without_command=True)
@click.pass_context
def deployments(ctx) -> None:
    """Deployments made by `dlbox serve`: ls, show, rm, logs."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(ls, as_json=False, limit=100, offset=0)


@deployments.command()
@page_options()
@answers(table(f"{'NAME':<24} {'STATE':<18} {'MODEL':<24} {'LABELS/VERSIONS':<22} {'RESTARTS':<9} LAST ERROR",
               lambda d: f"{d['name']:<24} {d['state'] + ('/' + d['health'] if d['health'] else ''):<18} "
                         f"{d['model']:<24} {_served(d):<22} {d['restarts']:<9} {d['last_error'] or '-'}",
               empty="no deployments (start one with `dlbox serve MODEL`)"))
def ls(backend, limit: int, offset: int):
    """Your deployments: state, health, the version each label points to, restarts and the last error."""
    return backend.deployments(limit=limit, offset=offset)


@deployments.command()
@click.argument("name")
@answers(print_deployment)
def show(backend, name):
    """One deployment: endpoints, what it serves, restarts, notes."""
    return backend.deployment(name)


@deployments.command()
@click.argument("name")
@answers(lambda r, **_: f"deployment {r['name']} removed")
def rm(backend, name):
    """Stop serving: the record, the container and its folder go."""
    return backend.remove_deployment(name)


@deployments.command()
@click.argument("name")
@click.option("--tail", type=click.IntRange(1, 10000), default=200, show_default=True, help="The last N lines.")
@answers(lambda text, **_: text.rstrip("\n") if text else None)
def logs(backend, name, tail):
    """The server's log: a line per request (no payloads), version loads and unloads, errors."""
    return backend.deployment_logs(name, tail=tail)
