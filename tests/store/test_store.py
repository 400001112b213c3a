"""The store (dlbox.store) against SQLite and a real PostgreSQL server (see conftest.py).

Every test that takes `store`, `make_store` or `db_url` runs once per backend, each time on an
empty database of its own.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest
import sqlalchemy as sa

from dlbox.jobs.state import BadTransition, JobState
from dlbox.store.db import Job, Store, _sqlite_pragmas

GiB = 1024**3
BIG = 5 * GiB + 123  # beyond 2**31 and 2**32: a 32-bit column cannot hold it


def new_job(job_id: str | None = None, **fields) -> Job:
    values = dict(
        id=job_id or uuid.uuid4().hex, user="alice", state=JobState.QUEUED.value, command=["python", "train.py"],
        image_ref="dlbox/test:latest", image_id="sha256:" + "0" * 64, submitted_at=time.time(),
    )
    values.update(fields)
    return Job(**values)


def alembic_config():
    from pathlib import Path

    from alembic.config import Config

    import dlbox.store.db

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(dlbox.store.db.__file__).parent / "migrations"))
    return cfg


def open_engine(url: str) -> sa.Engine:
    """An engine set up the way Store sets up its own (SQLite pragmas included)."""
    engine = sa.create_engine(url)
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    return engine


# --- migrations ------------------------------------------------------------------------------


def test_migrates_an_empty_database_to_head(store):
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    inspector = sa.inspect(store.engine)
    assert {"jobs", "metrics", "alembic_version"} <= set(inspector.get_table_names())
    with store.engine.connect() as c:
        assert c.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one() == head
    columns = {c["name"] for c in inspector.get_columns("jobs")}
    assert columns == set(Job.__table__.columns.keys())


def test_opening_a_migrated_database_again_changes_nothing(make_store):
    first = make_store()
    first.add_job(new_job("a" * 32))
    second = make_store()  # migrate() runs again: already at head
    assert second.get_job("a" * 32) is not None


def test_schema_matches_the_models(store):
    """What the migrations made is what the models say (types included), so nothing is missing a migration."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from dlbox.store.db import Base

    with store.engine.connect() as c:
        ctx = MigrationContext.configure(c, opts={"compare_type": True})
        diff = compare_metadata(ctx, Base.metadata)
    assert diff == []


def test_migration_to_head_keeps_existing_jobs_and_metrics(db_url):
    """A database made by 0001, with a job and metrics in it, upgrades to head losing nothing.

    On SQLite the upgrade rebuilds the jobs table: with foreign keys on, dropping the old table
    would cascade into metrics unless the migration guards against it.
    """
    from alembic import command

    engine = open_engine(db_url)
    cfg = alembic_config()
    try:
        with engine.begin() as c:
            cfg.attributes["connection"] = c
            command.upgrade(cfg, "0001")
        with engine.begin() as c:
            c.execute(sa.text(
                "INSERT INTO jobs (id, \"user\", state, command, params, env, image_ref, image_id, git_dirty, mounts,"
                " volumes, cpus, memory, cancel_requested, submitted_at)"
                " VALUES ('abcd', 'alice', 'running', '[\"true\"]', '{}', '{}', 'r', 'i', false, '[]', '{}', 1.0,"
                " 1024, false, 1.0)"))
            c.execute(sa.text("INSERT INTO metrics (job_id, step, name, value) VALUES ('abcd', 1, 'loss', 0.5)"))
    finally:
        engine.dispose()

    store = Store(db_url)
    try:
        job = store.get_job("abcd")
        assert job is not None and job.memory == 1024 and job.state == "running"
        assert [(m.step, m.name, m.value) for m in store.metrics("abcd")] == [(1, "loss", 0.5)]
        store.update("abcd", peak_memory=BIG)
        assert store.get_job("abcd").peak_memory == BIG
        if store.engine.dialect.name == "sqlite":  # the rebuilt table still cascades deletes to metrics
            with store.engine.begin() as c:
                assert c.execute(sa.text("PRAGMA foreign_keys")).scalar_one() == 1
                assert c.execute(sa.text("PRAGMA foreign_key_check")).all() == []
                c.execute(sa.text("DELETE FROM jobs WHERE id = 'abcd'"))
            assert store.metrics("abcd") == []
    finally:
        store.engine.dispose()


def test_migrations_downgrade_and_upgrade_again(db_url):
    from alembic import command

    engine = open_engine(db_url)
    cfg = alembic_config()
    try:
        with engine.begin() as c:
            cfg.attributes["connection"] = c
            command.upgrade(cfg, "head")
            command.downgrade(cfg, "0001")
            command.upgrade(cfg, "head")
        assert {"jobs", "metrics"} <= set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


# --- jobs ------------------------------------------------------------------------------------


def test_add_and_get_job(store):
    job = new_job(name="first", params={"epochs": 10}, env={"A": "1"}, mounts=["/data:/data:ro"])
    store.add_job(job)
    got = store.get_job(job.id)
    assert got is not job
    assert (got.id, got.user, got.name, got.state) == (job.id, "alice", "first", "queued")
    assert got.command == ["python", "train.py"]
    assert got.params == {"epochs": 10} and got.env == {"A": "1"} and got.mounts == ["/data:/data:ro"]
    # the models' defaults
    assert got.volumes == {} and got.cpus == 1.0 and got.git_dirty is False and got.cancel_requested is False
    assert got.started_at is None and got.ended_at is None and got.memory is None


def test_get_job_unknown_is_none(store):
    assert store.get_job("f" * 32) is None
    assert store.get_job("ffff") is None


def test_get_job_by_unique_prefix(store):
    store.add_job(new_job("abcdef01" + "0" * 24))
    store.add_job(new_job("abcdef02" + "0" * 24))
    store.add_job(new_job("12345678" + "0" * 24))
    assert store.get_job("abcdef01").id == "abcdef01" + "0" * 24
    assert store.get_job("1234").id == "12345678" + "0" * 24
    assert store.get_job("abcdef") is None  # two jobs start so: ambiguous
    assert store.get_job("abc") is None  # shorter than 4: no prefix lookup
    assert store.get_job("9999") is None


@pytest.mark.parametrize("pattern", ["%%%%", "____", "abc%", "ab_d", "a%", "abcd%", "abcdef0_", "ab\\%", "ab'%"])
def test_prefix_lookup_takes_no_like_wildcards(store, pattern):
    store.add_job(new_job("abcdef01" + "0" * 24))
    assert store.get_job(pattern) is None


def test_jobs_filtered_by_state_and_user(store):
    now = time.time()
    a = store.add_job(new_job(user="alice", submitted_at=now + 1))
    b = store.add_job(new_job(user="bob", submitted_at=now + 2))
    c = store.add_job(new_job(user="alice", submitted_at=now + 3))
    store.transition(b.id, JobState.STARTING)
    store.transition(c.id, JobState.CANCELLED)

    ids = lambda jobs: [j.id for j in jobs]  # noqa: E731
    assert ids(store.jobs()) == [a.id, b.id, c.id]  # oldest first
    assert ids(store.jobs(user="alice")) == [a.id, c.id]
    assert ids(store.jobs(states={JobState.QUEUED})) == [a.id]
    assert ids(store.jobs(states={JobState.QUEUED, JobState.STARTING})) == [a.id, b.id]
    assert ids(store.jobs(states={JobState.CANCELLED}, user="alice")) == [c.id]
    assert ids(store.jobs(states={JobState.RUNNING})) == []
    assert ids(store.jobs(user="carol")) == []


def test_transition_follows_the_state_machine_and_stamps_times(store):
    job = store.add_job(new_job())
    before = time.time()
    store.transition(job.id, JobState.STARTING)
    assert store.get_job(job.id).started_at is None
    running = store.transition(job.id, JobState.RUNNING, container_id="c0ffee")
    assert running.state == "running" and running.container_id == "c0ffee"
    got = store.get_job(job.id)
    assert got.state == "running" and got.container_id == "c0ffee"
    assert before <= got.started_at <= time.time() and got.ended_at is None

    ended = store.transition(job.id, JobState.SUCCEEDED, reason="exit code 0", exit_code=0)
    got = store.get_job(job.id)
    assert ended.state == got.state == "succeeded"
    assert got.reason == "exit code 0" and got.exit_code == 0
    assert got.started_at <= got.ended_at <= time.time()


def test_transition_back_to_queued_keeps_no_start_time_and_restarting_keeps_the_first(store):
    job = store.add_job(new_job())
    store.transition(job.id, JobState.STARTING)
    store.transition(job.id, JobState.QUEUED)  # a start that failed for lack of room
    store.transition(job.id, JobState.STARTING)
    store.transition(job.id, JobState.RUNNING)
    first = store.get_job(job.id).started_at
    assert first is not None


@pytest.mark.parametrize("path, illegal", [
    ([], JobState.RUNNING),  # queued -> running skips starting
    ([], JobState.SUCCEEDED),
    ([JobState.STARTING, JobState.RUNNING], JobState.QUEUED),
    ([JobState.CANCELLED], JobState.STARTING),  # finished is final
    ([JobState.STARTING, JobState.RUNNING, JobState.SUCCEEDED], JobState.FAILED),
])
def test_illegal_transition_raises_and_changes_nothing(store, path, illegal):
    job = store.add_job(new_job())
    for state in path:
        store.transition(job.id, state)
    before = store.get_job(job.id)
    with pytest.raises(BadTransition):
        store.transition(job.id, illegal, reason="nope", exit_code=3)
    after = store.get_job(job.id)
    assert (after.state, after.reason, after.exit_code, after.ended_at) == \
        (before.state, before.reason, before.exit_code, before.ended_at)


def test_failing_from_queued_stamps_the_end_only(store):
    job = store.add_job(new_job())
    store.transition(job.id, JobState.FAILED, reason="image gone")
    got = store.get_job(job.id)
    assert got.state == "failed" and got.reason == "image gone"
    assert got.started_at is None and got.ended_at is not None


def test_update_changes_data_not_state(store):
    job = store.add_job(new_job())
    store.update(job.id, container_id="abc", cancel_requested=True, gpu_ids=[0, 1], volumes={"v": "/v"})
    got = store.get_job(job.id)
    assert got.container_id == "abc" and got.cancel_requested is True
    assert got.gpu_ids == [0, 1] and got.volumes == {"v": "/v"}
    assert got.state == "queued"
    with pytest.raises(AssertionError):
        store.update(job.id, state="running")
    assert store.get_job(job.id).state == "queued"


def test_json_columns_round_trip(store):
    params = {"lr": 0.001, "epochs": 10, "layers": [64, 32], "name": "résumé ✓", "nested": {"a": None, "b": True}}
    command = ["python", "-c", "print('hi \"there\"')", "--flag=ü"]
    job = store.add_job(new_job(command=command, params=params, env={"PATH": "/usr/bin", "EMPTY": ""},
                                mounts=[{"source": "/d", "target": "/d", "read_only": True}],
                                volumes={"cache": "/root/.cache"}, gpu_ids=[]))
    got = store.get_job(job.id)
    assert got.command == command and got.params == params
    assert got.env == {"PATH": "/usr/bin", "EMPTY": ""}
    assert got.mounts == [{"source": "/d", "target": "/d", "read_only": True}]
    assert got.volumes == {"cache": "/root/.cache"} and got.gpu_ids == []


def test_large_integers_round_trip(store):
    """Memory sizes are bytes: 8 GiB and a peak past 2**31 must fit (they overflow a 32-bit INTEGER)."""
    job = store.add_job(new_job(memory=8 * GiB, shm_size=2 * GiB))
    store.update(job.id, peak_memory=BIG)
    got = store.get_job(job.id)
    assert (got.memory, got.shm_size, got.peak_memory) == (8 * GiB, 2 * GiB, BIG)
    store.transition(job.id, JobState.CANCELLED, peak_memory=2**63 - 1)  # the most a BIGINT holds
    assert store.get_job(job.id).peak_memory == 2**63 - 1


def test_text_columns_keep_long_text(store):
    diff = "".join(f"+line {i} ✓\n" for i in range(20000))
    job = store.add_job(new_job(git_diff=diff, lock_text="x" * 100000, reason="r" * 5000))
    got = store.get_job(job.id)
    assert got.git_diff == diff and len(got.lock_text) == 100000 and got.reason == "r" * 5000


# --- metrics ---------------------------------------------------------------------------------


def test_replace_metrics_and_metrics(store):
    a = store.add_job(new_job())
    b = store.add_job(new_job())
    assert store.metrics(a.id) == []
    store.replace_metrics(a.id, [{"step": 1, "name": "loss", "value": 0.9},
                                 {"step": 2, "name": "loss", "value": "0.5"},  # values become floats
                                 {"name": "accuracy", "value": 1}])
    store.replace_metrics(b.id, [{"step": 1, "name": "loss", "value": 3.0}])
    got = store.metrics(a.id)
    assert [(m.job_id, m.step, m.name, m.value) for m in got] == [
        (a.id, 1, "loss", 0.9), (a.id, 2, "loss", 0.5), (a.id, None, "accuracy", 1.0)]  # in insertion order
    assert all(isinstance(m.value, float) for m in got)

    store.replace_metrics(a.id, [{"step": 3, "name": "loss", "value": 0.1}])  # replaces, not appends
    assert [(m.step, m.value) for m in store.metrics(a.id)] == [(3, 0.1)]
    assert [(m.step, m.value) for m in store.metrics(b.id)] == [(1, 3.0)]  # another job's untouched
    store.replace_metrics(a.id, [])
    assert store.metrics(a.id) == []


def test_last_metrics_are_the_last_logged_of_each_name(store):
    a, b, c = (store.add_job(new_job()) for _ in range(3))
    store.replace_metrics(a.id, [{"step": 1, "name": "loss", "value": 0.9}, {"name": "acc", "value": 0.1},
                                 {"step": 2, "name": "loss", "value": 0.5}, {"name": "acc", "value": 0.05},
                                 {"step": 3, "name": "loss", "value": 0.7}])  # the last, not the lowest
    store.replace_metrics(b.id, [{"step": 1, "name": "loss", "value": 3.0}])
    got = store.last_metrics([a.id, b.id, c.id])
    assert got[a.id] == {"loss": 0.7, "acc": 0.05}
    assert got[b.id] == {"loss": 3.0} and got[c.id] == {}
    assert store.last_metrics([b.id]) == {b.id: {"loss": 3.0}}


def test_metrics_need_an_existing_job(store):
    with pytest.raises(sa.exc.IntegrityError):
        store.replace_metrics("f" * 32, [{"step": 1, "name": "loss", "value": 1.0}])


def test_deleting_a_job_deletes_its_metrics(store):
    job = store.add_job(new_job())
    store.replace_metrics(job.id, [{"step": 1, "name": "loss", "value": 1.0}])
    with store.session() as s:
        s.execute(sa.delete(Job).where(Job.id == job.id))
    assert store.metrics(job.id) == []


def test_duplicate_job_id_is_refused(store):
    store.add_job(new_job("a" * 32))
    with pytest.raises(sa.exc.IntegrityError):
        store.add_job(new_job("a" * 32))


# --- several stores, several writers ---------------------------------------------------------


def test_two_stores_see_each_others_writes(make_store):
    one, two = make_store(), make_store()
    job = one.add_job(new_job())
    assert two.get_job(job.id).state == "queued"
    two.transition(job.id, JobState.STARTING)
    assert one.get_job(job.id).state == "starting"
    one.update(job.id, container_id="c1")
    assert two.get_job(job.id).container_id == "c1"
    two.replace_metrics(job.id, [{"step": 1, "name": "loss", "value": 0.25}])
    assert [m.value for m in one.metrics(job.id)] == [0.25]
    assert [j.id for j in two.jobs(states={JobState.STARTING})] == [job.id]


@pytest.mark.parametrize("sharing", ["store-per-thread", "one-store"])
def test_concurrent_writers_do_not_fail(make_store, sharing):
    """Threads writing at once, through a store each (like separate processes) or through one (like
    the service's threads): nothing is refused, e.g. with SQLite's "database is locked", and no
    write is lost."""
    if sharing == "one-store":
        stores = [make_store()] * 4
    else:
        stores = [make_store() for _ in range(4)]
    per_thread = 25
    errors: list[BaseException] = []
    start = threading.Barrier(len(stores) * 2)

    def writer(store: Store, n: int) -> None:
        try:
            start.wait()
            for i in range(per_thread):
                job = store.add_job(new_job(f"{n:02d}{i:030d}", user=f"u{n}"))
                store.replace_metrics(job.id, [{"step": s, "name": "loss", "value": s / 10} for s in range(5)])
                store.transition(job.id, JobState.STARTING)
                store.update(job.id, peak_memory=BIG + i)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def reader(store: Store) -> None:
        try:
            start.wait()
            for _ in range(per_thread):
                store.jobs(states={JobState.STARTING})
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(s, n)) for n, s in enumerate(stores)]
    threads += [threading.Thread(target=reader, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    jobs = stores[0].jobs()
    assert len(jobs) == len(stores) * per_thread
    assert all(j.state == "starting" and j.peak_memory >= BIG for j in jobs)
    assert all(len(stores[0].metrics(j.id)) == 5 for j in jobs[:10])


# --- users, tokens, workspaces (the team server's tables) -------------------------------------


def test_users_tokens_and_their_removal(store):
    from dlbox.server import accounts

    accounts.add_user(store, "alice", quota={"cpus": 4.0, "memory": BIG})
    accounts.add_user(store, "root1", admin=True)
    assert [(u.name, u.role) for u in store.users()] == [("alice", "user"), ("root1", "admin")]
    assert store.get_user("alice").quota == {"cpus": 4.0, "memory": BIG}
    row, token = accounts.create_token(store, "alice", name="laptop", expires="1h")
    assert accounts.authenticate(store, token).name == "alice"
    assert [t.id for t in store.tokens(user="alice")] == [row.id] and store.tokens(user="root1") == []
    store.revoke_token(row.id)
    first_revoke = store.get_token(row.id).revoked_at
    store.revoke_token(row.id)  # revoking twice keeps the first time
    assert store.get_token(row.id).revoked_at == first_revoke
    store.remove_user("alice")
    assert store.get_user("alice") is None and store.tokens(user="alice") == []
    with pytest.raises(Exception):  # a token must belong to a user that exists
        from dlbox.store.db import Token

        store.add_token(Token(id="0" * 12, user="ghost", digest="x", created_at=time.time()))


def test_workspace_rows_round_trip_and_filter_by_owner(store):
    from dlbox.store.db import Workspace

    now = time.time()
    for name, owner in (("a1", "alice"), ("b1", "bob"), ("a2", "alice")):
        store.put_workspace(Workspace(name=name, owner=owner, state="running", cpus=1.5, memory=BIG, gpus=0,
                                      info={"name": name, "mounts": [{"source": "/d"}]}, created_at=now,
                                      updated_at=now))
    assert [w.name for w in store.workspaces(owner="alice")] == ["a1", "a2"]
    assert [w.name for w in store.workspaces()] == ["a1", "a2", "b1"]
    row = store.get_workspace("a1")
    assert row.memory == BIG and row.info["mounts"] == [{"source": "/d"}]
    row.state = "exited"
    store.put_workspace(row)  # an upsert: the same row, changed
    assert store.get_workspace("a1").state == "exited" and len(store.workspaces()) == 3
    store.remove_workspace("a1")
    assert store.get_workspace("a1") is None


def test_racing_transitions_move_a_job_once(make_store):
    """The loop finishing a job and a cancel racing it: exactly one wins, the other is refused."""
    stores = [make_store(), make_store()]
    for trial in range(15):
        job = stores[0].add_job(new_job(state=JobState.RUNNING.value))
        barrier = threading.Barrier(2)
        outcomes = []

        def move(store, to):
            barrier.wait()
            try:
                store.transition(job.id, to)
                outcomes.append(to)
            except BadTransition:
                outcomes.append("refused")

        threads = [threading.Thread(target=move, args=(st, to))
                   for st, to in zip(stores, (JobState.SUCCEEDED, JobState.CANCELLED))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(map(str, outcomes)).count("refused") == 1, (trial, outcomes)
        assert stores[0].get_job(job.id).state in ("succeeded", "cancelled")


def test_two_writers_of_a_new_workspace_row_both_succeed(make_store):
    """The reconcile loop adopting a workspace while the request that made it records it."""
    from dlbox.store.db import Workspace

    stores = [make_store(), make_store()]
    for trial in range(10):
        barrier = threading.Barrier(2)
        errors = []

        def put(store, owner):
            barrier.wait()
            try:
                store.put_workspace(Workspace(name=f"w{trial}", owner=owner, state="running", gpus=0, info={},
                                              created_at=time.time(), updated_at=time.time()))
            except Exception as exc:  # noqa: BLE001 - collected for the assertion
                errors.append(exc)

        threads = [threading.Thread(target=put, args=(st, o)) for st, o in zip(stores, ("alice", "local"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == [] and stores[0].get_workspace(f"w{trial}") is not None


def test_a_removed_users_name_is_retired_for_good(store):
    from dlbox.server import accounts
    from dlbox.errors import DlboxError

    accounts.add_user(store, "carol")
    assert store.retired("carol") is None
    store.remove_user("carol")
    assert store.get_user("carol") is None and store.retired("carol").removed_at > 0
    with pytest.raises(DlboxError, match="retired") as refused:
        accounts.add_user(store, "carol")
    assert refused.value.code == "exists" and store.get_user("carol") is None
    store.remove_user("carol")  # removing again (say after a half-done removal) keeps it retired, no error
    assert store.retired("carol") is not None


def test_artifact_bytes_sum_a_users_runs_and_can_leave_one_out(store):
    for job_id, user, size in (("a1", "alice", 300), ("a2", "alice", 5_000_000_000), ("a3", "alice", None),
                               ("b1", "bob", 7)):
        store.add_job(new_job(job_id, user=user, artifact_bytes=size))
    assert store.artifact_bytes("alice") == 5_000_000_300
    assert store.artifact_bytes("alice", besides="a2") == 300
    assert store.artifact_bytes("carol") == 0


def test_model_versions_are_numbered_per_model_and_never_reused(store):
    def add(owner="ann", name="digits"):
        return store.add_model_version(owner, name, files_hash="0" * 64, files_bytes=1, path="model", run_id="r",
                                       image_id="sha256:1", registered_by=owner, registered_at=1.0).version

    assert [add(), add(), add(name="other"), add(owner="bob")] == [1, 2, 1, 1]
    model = store.get_model("ann", "digits")
    store.move_alias(model.id, "champion", 2, by="ann")
    assert store.remove_model_version(model.id, 2, by="ann") == ["champion"]
    assert add() == 3
    moves = [(m.alias, m.from_version, m.to_version) for m in store.alias_history(model.id)]
    assert moves == [("champion", None, 2), ("champion", 2, None)]
    assert store.model_aliases(model.id) == []


def test_snapshots_of_runs_and_model_versions_are_kept_by_gc(store):
    kept_by_run, kept_by_model = "a" * 64, "b" * 64
    store.add_job(new_job("s1", code_hash=kept_by_run))
    store.add_job(new_job("s2"))  # --no-code: refers to none
    store.add_model_version("ann", "digits", files_hash="0" * 64, files_bytes=1, path="model", run_id="r",
                            image_id="sha256:1", registered_by="ann", registered_at=1.0, code_hash=kept_by_model)
    assert store.referenced_snapshots() == {kept_by_run, kept_by_model}


def test_deployment_rows_round_trip_update_and_remove(store):
    import sqlalchemy.exc

    from dlbox.store.db import Deployment

    def row(name="digits-prod", owner="ann", **kw):
        return Deployment(name=name, owner=owner, model_owner=owner, model_name="digits", port=8501, host="127.0.0.1",
                          **kw)

    store.add_deployment(row(alias="champion", grpc_port=8500, memory=2 * 1024**3, batch_max=16,
                             batch_timeout_ms=3.5))
    store.add_deployment(row("pinned", owner="bob", versions=[1, 2]))
    got = store.get_deployment("digits-prod")
    assert (got.alias, got.versions, got.replicas, got.desired, got.restarts, got.last_error) == (
        "champion", None, 1, "running", 0, None)
    assert (got.memory, got.batch_max, got.batch_timeout_ms) == (2 * 1024**3, 16, 3.5)
    assert store.get_deployment("pinned").versions == [1, 2]
    assert [d.name for d in store.deployments(owner="bob")] == ["pinned"]
    assert [d.name for d in store.deployments()] == ["digits-prod", "pinned"]
    with pytest.raises(sqlalchemy.exc.IntegrityError):
        store.add_deployment(row())  # one row per name
    store.update_deployment("digits-prod", restarts=2, last_error="it died")
    updated = store.get_deployment("digits-prod")
    assert (updated.restarts, updated.last_error) == (2, "it died") and updated.updated_at >= got.updated_at
    store.remove_deployment("digits-prod")
    assert store.get_deployment("digits-prod") is None and len(store.deployments()) == 1
