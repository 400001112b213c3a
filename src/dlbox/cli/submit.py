"""`dlbox run`: submit a job before click is even loaded.

A job cannot be queued before its CLI process has started, and importing click alone costs
this machine ~40 ms, two thirds of what benchmark 6 allows (submit until running at most
1.2x a raw `docker run`, whose engine work is ~0.3 s). So dlbox.launch reads `run`'s
arguments here, with the grammar `--help` shows:

    dlbox run [SPEC] [OPTIONS] -- CMD [ARGS]...     (or, without SPEC: [OPTIONS] CMD [ARGS]...)

SPEC is a .yaml/.yml or existing file followed by options only, then `--`; otherwise CMD starts
at the first word that is not an option, and the options and `--` after it are CMD's own.

Anything else (--help, an unknown option, a missing or malformed value) goes to click's
`run` command, which says what is wrong. A unit test keeps the table below equal to
click's options and checks that both read every sample alike.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

from dlbox import gitinfo
from dlbox.cli.backend import backend
from dlbox.errors import UsageError

USAGE = "usage: dlbox run [SPEC] [OPTIONS] -- CMD [ARGS]..."
OPTIONS = {"--preset": "preset", "--image": "image", "--workspace": "workspace", "--name": "name",
           "--mount": "mounts", "--memory": "memory", "--cpus": "cpus", "--gpus": "gpus", "--param": "params",
           "--code": "code"}
REPEATABLE = {"mounts", "params"}
FLAGS = {"--json": "as_json", "--no-code": "no_code"}


def parse(argv: list[str]) -> dict | None:
    """The keywords of `submit` for the words after `run`, or None: leave them to click."""
    found: dict = {name: [] if name in REPEATABLE else None for name in OPTIONS.values()}
    found.update(as_json=False, no_code=False, spec=[], command=[])
    separated = "--" in argv  # SPEC: a spec file followed by options only, then `--`; else CMD starts there
    at = 0
    while at < len(argv):
        word = argv[at]
        if word == "--":
            found["command"] = argv[at + 1:]
            return found
        if not word.startswith("-") or word == "-":
            if separated and not found["spec"] and _is_spec(word) and _only_options_until_separator(argv, at + 1):
                found["spec"].append(word)
                at += 1
                continue
            found["command"] = argv[at:]  # CMD's own words (a `--` of its own included)
            return found
        name, equals, value = word.partition("=")
        if name in FLAGS and not equals:
            found[FLAGS[name]] = True
            at += 1
            continue
        if name not in OPTIONS:
            return None  # -h, --help, a typo: click's message
        if not equals:
            if at + 1 >= len(argv) or argv[at + 1] == "--":
                return None  # a missing value
            value = argv[at + 1]
            at += 1
        key = OPTIONS[name]
        if key == "cpus":
            try:
                value = float(value)
            except ValueError:
                return None
        if key in REPEATABLE:
            found[key].append(value)
        else:
            found[key] = value  # the last one counts, as in click
        at += 1
    return found


def _is_spec(word: str) -> bool:
    """A spec file by name or by being one (`dlbox run python -- t.py` runs python)."""
    return word.endswith((".yaml", ".yml")) or os.path.isfile(word)


def _only_options_until_separator(argv: list[str], at: int) -> bool:
    """Whether argv[at:] is dlbox's own options up to a `--`: then the word before them is SPEC."""
    while at < len(argv) and argv[at] != "--":
        name, equals, _ = argv[at].partition("=")
        if name in FLAGS and not equals:
            at += 1
        elif name in OPTIONS:
            at += 1 if equals else 2
        else:
            return False
    return at < len(argv)


def parse_params(pairs: list[str]) -> dict[str, str]:
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", key):
            raise UsageError(f"--param: {pair!r} is not KEY=VALUE")
        params[key] = value
    return params


def resolve_image(where, spec_file, preset, image, workspace):
    """(image ref, project dir, the spec's job defaults or None, the spec's code.dest or None) from the
    one of them given."""
    given = [x for x in (spec_file, preset, image, workspace) if x]
    if len(given) > 1:
        raise UsageError("give one of SPEC, --preset, --image or --workspace")
    return where.job_image(spec_file, preset, image, workspace)


def submit(*, spec: list[str], command: list[str], preset=None, image=None, workspace=None, name=None,
           mounts=(), memory=None, cpus=None, gpus=None, params=(), code=None, no_code=False, as_json=False) -> None:
    """Queue COMMAND as a job and print it (JSON with as_json): the project's code goes with it as
    a snapshot, read-only at the job's working directory, unless no_code."""
    if len(spec) > 1 or not command:
        raise UsageError(USAGE)
    if code and no_code:
        raise UsageError("give --code DIR or --no-code, not both")
    where = backend()
    ref, project_dir, defaults, code_dest = resolve_image(where, Path(spec[0]) if spec else None, preset, image,
                                                          workspace)
    if defaults is not None:  # the spec's job defaults, where no flag says otherwise
        from dlbox.sizes import format_size

        res = defaults.resources
        memory = memory or (format_size(res.memory) if res.memory else None)
        cpus = cpus if cpus is not None else res.cpus
        gpus = gpus or (str(res.gpus if not isinstance(res.gpus, list) else ",".join(res.gpus))
                        if res.gpus is not None else None)
        targets = {m.split(":")[1] for m in mounts if ":" in m}
        mounts = list(mounts) + [m for m in defaults.mounts if m.split(":")[1] not in targets]
    code_dir = None if no_code else (Path(code) if code else project_dir)
    snap = None
    if code_dir is not None:  # refused here (size, links) before anything is queued
        from dlbox import snapshots

        snap = snapshots.take(code_dir)
        if snap.skipped:
            sys.stderr.write(f"code: skipped special files: {', '.join(snap.skipped[:10])}"
                             f"{' ...' if len(snap.skipped) > 10 else ''}\n")
    git = gitinfo.describe(code_dir or project_dir)
    body = {"image": ref, "command": list(command), "name": name, "params": parse_params(params),
            "mounts": list(mounts), "workspace": workspace, "memory": memory, "cpus": cpus, "gpus": gpus,
            "project_dir": str(project_dir), "git_commit": git["commit"], "git_dirty": git["dirty"],
            "git_diff": git["diff"] or None, "code_hash": None, "code_dest": code_dest if snap else None}
    if snap is not None:
        job, sent = where.submit_with_code(body, snap)
    else:
        job, sent = where.submit(body), None
    if as_json:
        sys.stdout.write(json.dumps(job, indent=2) + "\n")
    else:
        if sent:
            from dlbox.snapshots import human

            sys.stdout.write(f"code {sent['hash'][:12]}: {sent['files']} files, {human(sent['bytes'])} at {job['code']['dest']} ({'sent' if sent['sent'] else 'already stored'})\n")
        sys.stdout.write(f"job {job['id']} {job['state']}; follow it with `dlbox logs -f {job['id']}`\n")
