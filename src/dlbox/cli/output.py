"""How the CLI prints: --json documents, the body of a command that prints one backend answer
(answers(), table()), the tables' shared bits, workspaces and jobs, and how a command ends on an
error (report())."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any

import click

from dlbox.errors import DlboxError

JSON_HELP = "Print a JSON document for scripts instead of text."


def emit(data) -> None:
    click.echo(json.dumps(data, indent=2))


def json_option(command):
    return click.option("--json", "as_json", is_flag=True, help=JSON_HELP)(command)


OFFSET_MAX = 10_000_000  # the API's bound (server/deps.py Offset)


def page_options(default: int = 100, most: int = 1000):
    """--limit and --offset of a list command: one page of the API's list (its bounds, checked here first
    so a bad value is one usage line naming the flag, exit 2)."""

    def wrap(command):
        command = click.option("--offset", default=0, show_default=True, type=click.IntRange(0, OFFSET_MAX),
                               help="Skip this many rows first (the newest, for jobs and runs): the next page.")(command)
        return click.option("--limit", default=default, show_default=True, type=click.IntRange(1, most),
                            help=f"At most this many rows (1-{most}).")(command)

    return wrap


def more_hint(rows: list, limit: int, offset: int = 0) -> None:
    if len(rows) >= limit:
        click.echo(f"(rows {offset + 1}-{offset + len(rows)} shown; --offset {offset + limit} for the next page)",
                   err=True)


def answers(text: Callable[..., str | None] | None = None, *, ok: Callable[[Any], bool] | None = None):
    """The last decorator of a command whose body asks the backend (its first argument) and returns
    the answer. Adds --json: with it the answer is printed as JSON, else `text(answer, **params)`
    prints it (a string it returns is echoed). With `ok`, the command exits 1 when ok(answer) is
    false, with --json or without."""

    def wrap(body):
        @functools.wraps(body)
        def command(as_json: bool, **params):
            from dlbox.cli.backend import backend  # loaded when a command runs, not when --help does

            answer = body(backend(), **params)
            if as_json:
                emit(answer)
            elif text is not None and (said := text(answer, **params)) is not None:
                click.echo(said)
            if ok is not None and not ok(answer):
                sys.exit(1)

        return json_option(command)

    return wrap


def table(header: str, line: Callable[[dict], str], *, empty: str | None = None) -> Callable[..., None]:
    """A text printer for `answers` of a list: the header and one line a row (`empty` alone when there
    are none), after the hint on stderr when the command's --limit was reached."""

    def show(rows: list, limit: int | None = None, offset: int = 0, **_params) -> None:
        if limit is not None:
            more_hint(rows, limit, offset)
        if not rows and empty is not None:
            click.echo(empty)
            return
        click.echo(header)
        for row in rows:
            click.echo(line(row))

    return show


def print_workspace(ws: dict, *, secrets_shown: bool) -> None:
    click.echo(f"workspace {ws['name']}: {ws['state']} ({ws['image']})")
    if ws["jupyter"]:
        click.echo(f"  Jupyter  {ws['jupyter']['url']}")
    if ws["ssh"]:
        ssh = ws["ssh"]
        click.echo(f"  SSH      ssh -p {ssh['port']} {ssh['user']}@{ssh['host']}   (or: dlbox ssh {ws['name']})")
    click.echo(f"  data     volume {ws['volume']['name']} at {ws['volume']['target']}")
    for m in ws["mounts"]:
        click.echo(f"  mount    {m['source']} -> {m['target']}{' (read-only)' if m['read_only'] else ''}")
    r = ws["resources"]
    click.echo(f"  limits   memory {r['memory'] or 'none'}, cpus {r['cpus'] or 'all'}, /dev/shm {r['shm_size']}, "
               f"pids {r['pids']}, gpus {','.join(r['gpus']) if r['gpus'] else 'none'}")
    if secrets_shown and ws["jupyter"]:
        click.echo("  (the token is shown only now and by `dlbox token`; keep it to yourself)")


def print_job(job: dict) -> None:
    click.echo(f"job {job['id']}: {job['state']}{' (' + job['reason'] + ')' if job.get('reason') else ''}")


def write_chunks(chunks) -> None:
    """Raw output (logs) as it comes."""
    for chunk in chunks:
        sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()


# --- how a command ends on an error ----------------------------------------------------------------


def fail(message: str, exit_code: int) -> None:
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(exit_code)


def report(exc: BaseException) -> None:
    """End the process for `exc`: one line on stderr and its exit code (2 for usage errors)."""
    if isinstance(exc, click.exceptions.Exit):
        sys.exit(exc.exit_code)
    if isinstance(exc, (click.exceptions.Abort, KeyboardInterrupt)):
        fail("interrupted", 130)
    if isinstance(exc, click.UsageError):
        where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
        fail(exc.format_message() + where, 2)
    if isinstance(exc, click.ClickException):
        fail(exc.format_message(), exc.exit_code)
    if isinstance(exc, DlboxError):
        fail(exc.message, exc.exit_code)
    if not isinstance(exc, Exception):  # SystemExit and the like
        raise exc
    import os

    if os.environ.get("DLBOX_DEBUG"):  # a bug or an engine surprise: one line, the trace on request
        raise exc
    origin = type(exc).__module__.split(".")[0]
    what = {"docker": "the engine", "requests": "the engine", "http": "the dlbox service"}.get(origin)
    detail = f"{what} failed: {exc}" if what else f"internal error: {type(exc).__name__}: {exc}"
    fail(detail.splitlines()[0] + " (DLBOX_DEBUG=1 shows the traceback)", 1)
