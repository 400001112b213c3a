"""Users of the team server and API tokens: users add/ls/quota/rm, tokens create/ls/revoke."""

from __future__ import annotations

import click

from dlbox.cli.output import emit, json_option, limit_option, more_hint


def quota_flags(command):
    for flag, kind, text in (("--workspaces", int, "workspaces at once"), ("--cpus", float, "CPUs"),
                             ("--memory", str, "memory, e.g. 16g"), ("--gpus", int, "GPUs"),
                             ("--storage", str, "bytes of run artifacts kept, e.g. 50g")):
        command = click.option(flag, type=kind, help=f"Quota: {text}.")(command)
    return command


@click.group()
def users() -> None:
    """Users of the team server (admins only): add, list, set quotas, remove."""


@users.command(name="add")
@click.argument("name")
@click.option("--admin", is_flag=True, help="May manage users and see everything.")
@quota_flags
@json_option
def users_add(name, admin, gpus, memory, cpus, workspaces, storage, as_json) -> None:
    """Add user NAME and print their first API token (shown once: hand it over safely)."""
    from dlbox.cli.backend import backend

    quota = {"workspaces": workspaces, "cpus": cpus, "memory": memory, "gpus": gpus, "storage": storage}
    user = backend().add_user(name, admin=admin, quota=quota)
    if as_json:
        emit(user)
    else:
        click.echo(f"added {user['role']} {user['name']}; their token (shown only now):\n{user['token']}")


@users.command(name="ls")
@limit_option()
@json_option
def users_ls(limit: int, as_json: bool) -> None:
    """List users with their roles and quotas, by name."""
    from dlbox.cli.backend import backend

    rows = backend().users(limit=limit)
    if as_json:
        emit(rows)
        return
    more_hint(rows, limit)
    click.echo(f"{'NAME':<16} {'ROLE':<6} {'CREATED':<21} QUOTA")
    for u in rows:
        quota = ", ".join(f"{k}={v}" for k, v in u["quota"].items()) or "-"
        click.echo(f"{u['name']:<16} {u['role']:<6} {u['created_at']:<21} {quota}")


@users.command(name="quota")
@click.argument("name")
@quota_flags
@json_option
def users_quota(name, gpus, memory, cpus, workspaces, storage, as_json) -> None:
    """Set NAME's quotas (the flags given; the others are lifted)."""
    from dlbox.cli.backend import backend

    user = backend().set_quota(name, {"workspaces": workspaces, "cpus": cpus, "memory": memory, "gpus": gpus,
                                      "storage": storage})
    emit(user) if as_json else click.echo(f"{name}: quota {user['quota'] or 'none'}")


@users.command(name="rm")
@click.argument("name")
@json_option
def users_rm(name: str, as_json: bool) -> None:
    """Remove user NAME; their tokens stop working at once."""
    from dlbox.cli.backend import backend

    result = backend().remove_user(name)
    emit(result) if as_json else click.echo(f"removed user {name}")


@click.group()
def tokens() -> None:
    """Your API tokens for the team server: create, list, revoke."""


@tokens.command(name="create")
@click.option("--name", help="A label to tell tokens apart.")
@click.option("--expires", default="90d", show_default=True, metavar="30d|12h|90m|never", help="When it stops working.")
@click.option("--user", help="Admins: a token for another user.")
@json_option
def tokens_create(name, expires, user, as_json) -> None:
    """Create a token and print it (shown once)."""
    from dlbox.cli.backend import backend

    row = backend().create_token(name=name, expires=expires, user=user)
    emit(row) if as_json else click.echo(row["token"])


@tokens.command(name="ls")
@click.option("--all", "show_all", is_flag=True, help="Admins: everyone's tokens.")
@limit_option()
@json_option
def tokens_ls(show_all: bool, limit: int, as_json: bool) -> None:
    """List tokens (never the secrets themselves), oldest first."""
    from dlbox.cli.backend import backend

    rows = backend().tokens(show_all=show_all, limit=limit)
    if as_json:
        emit(rows)
        return
    more_hint(rows, limit)
    click.echo(f"{'ID':<13} {'USER':<12} {'NAME':<12} {'STATE':<8} {'EXPIRES':<21} CREATED")
    for t in rows:
        click.echo(f"{t['id']:<13} {t['user']:<12} {t['name'] or '-':<12} {t['state']:<8} "
                   f"{t['expires_at'] or 'never':<21} {t['created_at']}")


@tokens.command(name="revoke")
@click.argument("token_id")
@json_option
def tokens_revoke(token_id: str, as_json: bool) -> None:
    """Revoke token TOKEN_ID (see `dlbox tokens ls`); it stops working at once."""
    from dlbox.cli.backend import backend

    row = backend().revoke_token(token_id)
    emit(row) if as_json else click.echo(f"revoked token {row['id']}")
