"""Hypothesis over the pure core: the queue's choice and `dlbox run`'s own argument reader."""

from __future__ import annotations

import click
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_jobs_logic import make_job
from test_submit_args import by_click

from dlbox.cli import submit
from dlbox.jobs import runner as jobs

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- jobs.pick ------------------------------------------------------------------------------------

USERS = st.sampled_from(["ann", "bob", "cy"])
GPUS = ["0", "1", "2", "3"]


@st.composite
def queue(draw):
    capacity = jobs.Capacity(cpus=draw(st.sampled_from([1.0, 2.0, 4.0, 8.0])),
                             memory=draw(st.sampled_from([None, 4 * 1024**3, 16 * 1024**3])),
                             gpus=GPUS[:draw(st.integers(0, 4))])

    def job(i, state):
        return make_job(f"{state[0]}{i}", user=draw(USERS), cpus=draw(st.sampled_from([0.5, 1.0, 2.0, 3.0])),
                        submitted=float(draw(st.integers(0, 50))),
                        memory=draw(st.sampled_from([None, 1024**3, 3 * 1024**3])),
                        gpu_request=draw(st.sampled_from([None, None, 1, 2])) if capacity.gpus else None,
                        state=state)

    running = []
    for i in range(draw(st.integers(0, 4))):  # what runs already fits: it was picked the same way
        candidate = job(i, "running")
        candidate.gpu_request = None
        if jobs.gpus_for(candidate, running, capacity) is not None:
            running.append(candidate)
    queued = [job(i, "queued") for i in range(draw(st.integers(0, 12)))]
    busy = set(draw(st.lists(st.sampled_from(capacity.gpus), unique=True))) if capacity.gpus else set()
    return queued, running, capacity, busy


@SETTINGS
@given(queue())
def test_pick_never_overfills_and_stops_only_when_nothing_else_fits(case):
    queued, running, capacity, busy = case
    chosen = jobs.pick(queued, running, capacity, busy)
    after = running + chosen
    assert sum(j.cpus for j in after) <= capacity.cpus + 1e-9
    if capacity.memory:
        assert sum(j.memory or 0 for j in after) <= capacity.memory
    held = [g for j in chosen for g in (j.gpu_ids or [])]
    assert len(held) == len(set(held)) and not set(held) & busy and set(held) <= set(capacity.gpus)
    for j in chosen:
        assert len(j.gpu_ids or []) == (j.gpu_request or 0)
    for waiting in (j for j in queued if j not in chosen):  # no job left behind that would have fit
        assert jobs.gpus_for(waiting, after, capacity, busy) is None


@SETTINGS
@given(queue())
def test_pick_takes_each_users_jobs_oldest_first_when_they_are_alike(case):
    queued, running, capacity, busy = case
    for j in queued:  # alike: the same size, so only age and fair share decide
        j.cpus, j.memory, j.gpu_request = 1.0, None, None
    chosen = jobs.pick(queued, running, capacity, busy)
    for user in {j.user for j in queued}:
        mine = sorted((j for j in queued if j.user == user), key=lambda j: j.submitted_at)
        picked = [j for j in chosen if j.user == user]
        assert [j.submitted_at for j in picked] == [j.submitted_at for j in mine[:len(picked)]]


@SETTINGS
@given(st.integers(1, 6), st.lists(USERS, min_size=1, max_size=12))
def test_pick_shares_alike_jobs_fairly(slots, owners):
    """With room for `slots` alike jobs, no user gets two more than another who still waits."""
    queued = [make_job(f"q{i}", user=u, submitted=float(i)) for i, u in enumerate(owners)]
    chosen = jobs.pick(queued, [], jobs.Capacity(cpus=float(slots), memory=None, gpus=[]))
    count = {u: sum(j.user == u for j in chosen) for u in set(owners)}
    waiting = {j.user for j in queued if j not in chosen}
    for user in waiting:
        assert all(count[user] >= n - 1 for n in count.values())


# --- `dlbox run`'s reader against click ------------------------------------------------------------

VALUE = st.from_regex(r"[a-z0-9:/.=_+-]{1,8}", fullmatch=True)
CPUS = st.one_of(st.floats(0.1, 64, allow_nan=False).map(repr), st.sampled_from(["1e0", "2", "x", "1.5.0"]))


@st.composite
def option(draw):
    flag = draw(st.sampled_from(sorted(submit.OPTIONS) + sorted(submit.FLAGS)))
    if flag in submit.FLAGS:
        return [flag]
    value = draw(CPUS if flag == "--cpus" else VALUE)
    return [f"{flag}={value}"] if draw(st.booleans()) else [flag, value]


@SETTINGS
@given(st.lists(option(), max_size=6), st.lists(st.one_of(VALUE, st.sampled_from(["--", "--json", "-x"])),
                                                 min_size=1, max_size=4))
def test_the_reader_agrees_with_click_on_generated_arguments(options, command):
    argv = [word for words in options for word in words] + ["--"] + command
    mine = submit.parse(argv)
    try:
        clicks = by_click(argv)
    except click.UsageError:  # what click refuses the fast reader must leave to click, to say why
        assert mine is None, argv
        return
    assert mine is None or mine == clicks  # None: click reads it (dlbox.launch falls back), never differently
