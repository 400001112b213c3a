"""Users of the team server and API tokens: users add/ls/quota/rm, tokens create/ls/revoke."""

from __future__ import annotations

import click

from dlbox.cli.output import answers, page_options, table

QUOTA_FLAGS = (("workspaces", int, "workspaces at once"), ("cpus", float, "CPUs"), ("memory", str, "memory, e.g. 16g"),
               ("gpus", int, "GPUs"), ("storage", str, "bytes of run artifacts kept, e.g. 50g"))


def quota_flags(command):
    for name, kind, text in QUOTA_FLAGS:
        command = click.option(f"--{name}", type=kind, help=f"Quota: {text}.")(command)
    return command


def quota_of(params: dict) -> dict:
    """The quota the flags give (None where a flag was not given); takes them out of `params`."""
    return {name: params.pop(name) for name, _, _ in QUOTA_FLAGS}


def quota_text(quota: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in quota.items()) or "-"


@click.group()
def users() -> None:
    """Users of the team server (admins only): add, list, set quotas, remove."""


@users.command(name="add")
@click.argument("name")
@click.option("--admin", is_flag=True, help="May manage users and see everything.")
@quota_flags
@answers(lambda user, **_: f"added {user['role']} {user['name']}; their token (shown only now):\n{user['token']}")
def users_add(backend, name, admin, **flags):
    """Add user NAME and print their first API token (shown once: hand it over safely)."""
    return backend.add_user(name, admin=admin, quota=quota_of(flags))


@users.command(name="ls")
@page_options()
@answers(table(f"{'NAME':<16} {'ROLE':<6} {'CREATED':<21} QUOTA",
               lambda u: f"{u['name']:<16} {u['role']:<6} {u['created_at']:<21} {quota_text(u['quota'])}"))
def users_ls(backend, limit: int, offset: int):
    """List users with their roles and quotas, by name."""
    return backend.users(limit=limit, offset=offset)


@users.command(name="quota")
@click.argument("name")
@quota_flags
@answers(lambda user, name, **_: f"{name}: quota {user['quota'] or 'none'}")
def users_quota(backend, name, **flags):
    """Set NAME's quotas (the flags given; the others are lifted)."""
    return backend.set_quota(name, quota_of(flags))


@users.command(name="rm")
@click.argument("name")
@answers(lambda result, name: f"removed user {name}")
def users_rm(backend, name: str):
    """Remove user NAME; their tokens stop working at once."""
    return backend.remove_user(name)


@click.group()
def tokens() -> None:
    """Your API tokens for the team server: create, list, revoke."""


@tokens.command(name="create")
@click.option("--name", help="A label to tell tokens apart.")
@click.option("--expires", default="90d", show_default=True, metavar="30d|12h|90m|never", help="When it stops working.")
@click.option("--user", help="Admins: a token for another user.")
@answers(lambda row, **_: row["token"])
def tokens_create(backend, name, expires, user):
    """Create a token and print it (shown once)."""
    return backend.create_token(name=name, expires=expires, user=user)


@tokens.command(name="ls")
@click.option("--all", "show_all", is_flag=True, help="Admins: everyone's tokens.")
@page_options()
@answers(table(f"{'ID':<13} {'USER':<12} {'NAME':<12} {'STATE':<8} {'EXPIRES':<21} CREATED",
               lambda t: f"{t['id']:<13} {t['user']:<12} {t['name'] or '-':<12} {t['state']:<8} "
                         f"{t['expires_at'] or 'never':<21} {t['created_at']}"))
def tokens_ls(backend, show_all: bool, limit: int, offset: int):
    """List tokens (never the secrets themselves), oldest first."""
    return backend.tokens(show_all=show_all, limit=limit, offset=offset)


@tokens.command(name="revoke")
@click.argument("token_id")
@answers(lambda row, **_: f"revoked token {row['id']}")
def tokens_revoke(backend, token_id: str):
    """Revoke token TOKEN_ID (see `dlbox tokens ls`); it stops working at once."""
    return backend.revoke_token(token_id)
