"""The one module that talks to the database: jobs and their run records, metrics, users and
their API tokens, the workspaces the team server knows about, and the model registry.

SQLAlchemy over SQLite (WAL) by default, or the URL in DLBOX_DATABASE_URL. The schema is
made by Alembic migrations (src/dlbox/store/migrations), run when the store opens.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

from sqlalchemy import (JSON, BigInteger, Boolean, Float, ForeignKey, Integer, String, Text, UniqueConstraint,
                        create_engine, event, func, inspect, select, update)
from sqlalchemy.orm import DeclarativeBase, defer, Mapped, Session, mapped_column, sessionmaker

from dlbox import config, redact
from dlbox.errors import StoreUnavailable
from dlbox.jobs.state import ALLOWED, JobState, check_transition
from dlbox.pipelines.state import PIPELINE_ALLOWED, STAGE_ALLOWED


class Base(DeclarativeBase):
    pass


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str | None] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(16), index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    command: Mapped[list] = mapped_column(JSON)
    params: Mapped[dict] = mapped_column(JSON, default=dict)
    env: Mapped[dict] = mapped_column(JSON, default=dict)
    image_ref: Mapped[str] = mapped_column(String(256))
    image_id: Mapped[str] = mapped_column(String(80))
    lock_hash: Mapped[str | None] = mapped_column(String(64))
    spec_hash: Mapped[str | None] = mapped_column(String(64))
    lock_text: Mapped[str | None] = mapped_column(Text)
    spec_text: Mapped[str | None] = mapped_column(Text)
    git_commit: Mapped[str | None] = mapped_column(String(64))
    git_dirty: Mapped[bool] = mapped_column(Boolean, default=False)
    git_diff: Mapped[str | None] = mapped_column(Text)
    project_dir: Mapped[str | None] = mapped_column(Text)
    workdir: Mapped[str | None] = mapped_column(Text)
    mounts: Mapped[list] = mapped_column(JSON, default=list)
    volumes: Mapped[dict] = mapped_column(JSON, default=dict)
    cpus: Mapped[float] = mapped_column(Float, default=1.0)
    memory: Mapped[int | None] = mapped_column(BigInteger)  # bytes: 0002_bigints
    shm_size: Mapped[int | None] = mapped_column(BigInteger)
    gpu_ids: Mapped[list | None] = mapped_column(JSON)  # given when the job starts
    gpu_request: Mapped[object | None] = mapped_column(JSON)  # what was asked: "all", a count, or IDs
    container_id: Mapped[str | None] = mapped_column(String(80))
    exit_code: Mapped[int | None] = mapped_column(Integer)
    peak_memory: Mapped[int | None] = mapped_column(BigInteger)  # bytes: 0002_bigints
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    submitted_at: Mapped[float] = mapped_column(Float, index=True)
    started_at: Mapped[float | None] = mapped_column(Float)
    ended_at: Mapped[float | None] = mapped_column(Float)
    reproduces: Mapped[str | None] = mapped_column(String(32))
    notes: Mapped[list | None] = mapped_column(JSON)  # what collection cut or skipped (0005)
    finish_attempts: Mapped[int] = mapped_column(Integer, default=0)
    artifact_bytes: Mapped[int | None] = mapped_column(BigInteger)
    code_hash: Mapped[str | None] = mapped_column(String(64), index=True)  # the code snapshot it ran (0007)
    code_files: Mapped[int | None] = mapped_column(Integer)
    code_bytes: Mapped[int | None] = mapped_column(BigInteger)
    code_dest: Mapped[str | None] = mapped_column(Text)  # where the job saw it (read-only)
    # a pipeline's evaluate job: this run's artifacts read-only at /dlbox/input (0009); set by the service only
    input_run: Mapped[str | None] = mapped_column(String(32))
    repo_digests: Mapped[list | None] = mapped_column(JSON)  # the image's REPO@sha256:... at submit (0011)


class CodeSnapshot(Base):
    """A code snapshot a server user sent: only they (and admins) may run, read or hold it."""

    __tablename__ = "snapshots"

    user: Mapped[str] = mapped_column(String(64), primary_key=True)
    hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    files: Mapped[int] = mapped_column(Integer)
    bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[float] = mapped_column(Float)


class User(Base):
    __tablename__ = "users"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    quota: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[float] = mapped_column(Float)


class Token(Base):
    """An API token: only its SHA-256 is kept; the token itself is shown once."""

    __tablename__ = "tokens"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    user: Mapped[str] = mapped_column(ForeignKey("users.name", ondelete="CASCADE"), index=True)
    name: Mapped[str | None] = mapped_column(String(64))
    digest: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float | None] = mapped_column(Float)
    revoked_at: Mapped[float | None] = mapped_column(Float)


class Workspace(Base):
    """Who owns a workspace and what it looked like when last seen; the engine holds the container."""

    __tablename__ = "workspaces"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64), index=True)
    state: Mapped[str] = mapped_column(String(16))
    cpus: Mapped[float | None] = mapped_column(Float)
    memory: Mapped[int | None] = mapped_column(BigInteger)
    gpus: Mapped[int] = mapped_column(Integer, default=0)
    info: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class RetiredName(Base):
    """The name of a removed user: never given again, so nobody inherits their runs or volumes."""

    __tablename__ = "retired_names"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    removed_at: Mapped[float] = mapped_column(Float)


class MetricRow(NamedTuple):
    job_id: str
    step: int | None
    name: str
    value: float


class Metric(Base):
    __tablename__ = "metrics"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    step: Mapped[int | None] = mapped_column(BigInteger)  # 0006: a job may count steps past 2^31
    name: Mapped[str] = mapped_column(String(128))
    value: Mapped[float] = mapped_column(Float)


class Model(Base):
    """A registered model: a name in its owner's namespace (0007)."""

    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("owner", "name", name="uq_models_owner_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(64))
    next_version: Mapped[int] = mapped_column(Integer, default=1)  # only goes up: numbers are never reused
    shared: Mapped[bool] = mapped_column(Boolean, default=False)  # an admin let every user see it
    created_at: Mapped[float] = mapped_column(Float)


class ModelVersion(Base):
    """One version: its files (content-addressed, by hash) and where it came from."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_id", "version", name="uq_model_versions_model_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    files_hash: Mapped[str] = mapped_column(String(64))
    files_bytes: Mapped[int] = mapped_column(BigInteger)
    path: Mapped[str] = mapped_column(Text)
    run_id: Mapped[str] = mapped_column(String(32))
    image_id: Mapped[str] = mapped_column(String(80))
    lock_hash: Mapped[str | None] = mapped_column(String(64))
    git_commit: Mapped[str | None] = mapped_column(String(64))
    git_dirty: Mapped[bool] = mapped_column(Boolean, default=False)
    code_hash: Mapped[str | None] = mapped_column(String(64))
    metrics: Mapped[dict | None] = mapped_column(JSON)
    signature: Mapped[dict | None] = mapped_column(JSON)
    registered_by: Mapped[str] = mapped_column(String(64))
    registered_at: Mapped[float] = mapped_column(Float)
    verdict: Mapped[str | None] = mapped_column(String(16))  # a pipeline's candidate: blessed or rejected (0009)
    verdict_detail: Mapped[dict | None] = mapped_column(JSON)  # the gate's verdict, metric by metric
    pipeline_id: Mapped[str | None] = mapped_column(String(32), index=True)  # the pipeline that registered it
    repo_digests: Mapped[list | None] = mapped_column(JSON)  # where its image can be pulled by digest (0011)


class Pipeline(Base):
    """A pipeline run of one commit (0009): intent recorded by the API, driven by the service's loop."""

    __tablename__ = "pipelines"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user: Mapped[str] = mapped_column(String(64), index=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    ref: Mapped[str | None] = mapped_column(String(256))
    git_commit: Mapped[str | None] = mapped_column(String(64))
    author: Mapped[str | None] = mapped_column(String(256))
    message: Mapped[str | None] = mapped_column(Text)
    code_hash: Mapped[str] = mapped_column(String(64), index=True)
    trigger: Mapped[str] = mapped_column(String(32))  # cli, hook, webhook
    image_id: Mapped[str | None] = mapped_column(String(80))
    lock_hash: Mapped[str | None] = mapped_column(String(64))
    model_name: Mapped[str | None] = mapped_column(String(64))
    model_version: Mapped[int | None] = mapped_column(Integer)
    champion_version: Mapped[int | None] = mapped_column(Integer)  # the champion the candidate was gated against
    verdict: Mapped[dict | None] = mapped_column(JSON)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    submitted_at: Mapped[float] = mapped_column(Float, index=True)
    started_at: Mapped[float | None] = mapped_column(Float)
    ended_at: Mapped[float | None] = mapped_column(Float)


class PipelineStage(Base):
    __tablename__ = "pipeline_stages"

    pipeline_id: Mapped[str] = mapped_column(ForeignKey("pipelines.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(16), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    job_ids: Mapped[list] = mapped_column(JSON, default=list)  # the runs it made
    result: Mapped[dict | None] = mapped_column(JSON)  # e.g. test counts, the image, the registered version
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # > 1 only for a build the service was killed in
    started_at: Mapped[float | None] = mapped_column(Float)
    ended_at: Mapped[float | None] = mapped_column(Float)


class HookProject(Base):
    """A project the team server runs pipelines for on a signed push webhook (0009)."""

    __tablename__ = "hook_projects"

    name: Mapped[str] = mapped_column(String(256), primary_key=True)  # GitHub's repository.full_name
    owner: Mapped[str] = mapped_column(String(64))  # whose pipelines they are
    repo: Mapped[str] = mapped_column(Text)  # a clone on the server that has the pushed commits
    secret: Mapped[str] = mapped_column(String(128))  # the salt the secret is derived from (pipelines/hook_keys.py)
    created_at: Mapped[float] = mapped_column(Float)


class ModelAlias(Base):
    __tablename__ = "model_aliases"

    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), primary_key=True)
    alias: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    set_by: Mapped[str] = mapped_column(String(64))
    set_at: Mapped[float] = mapped_column(Float)


class AliasMove(Base):
    """One move of an alias: from None is a new alias, to None a deleted one."""

    __tablename__ = "model_alias_history"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    alias: Mapped[str] = mapped_column(String(64))
    from_version: Mapped[int | None] = mapped_column(Integer)
    to_version: Mapped[int | None] = mapped_column(Integer)
    moved_by: Mapped[str] = mapped_column(String(64))
    moved_at: Mapped[float] = mapped_column(Float)


class Deployment(Base):
    """A deployment as intent (0010): which model (an alias followed, or pinned versions), where, how.
    The engine holds the container; the loop makes it match this row."""

    __tablename__ = "deployments"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64), index=True)
    model_owner: Mapped[str] = mapped_column(String(64))
    model_name: Mapped[str] = mapped_column(String(64))
    alias: Mapped[str | None] = mapped_column(String(64))
    versions: Mapped[list | None] = mapped_column(JSON)
    port: Mapped[int] = mapped_column(Integer)
    grpc_port: Mapped[int | None] = mapped_column(Integer)
    host: Mapped[str] = mapped_column(String(64))
    memory: Mapped[int | None] = mapped_column(BigInteger)
    replicas: Mapped[int] = mapped_column(Integer, default=1)
    batch_max: Mapped[int] = mapped_column(Integer, default=0)
    batch_timeout_ms: Mapped[float] = mapped_column(Float, default=2.0)
    desired: Mapped[str] = mapped_column(String(16), default="running")
    last_error: Mapped[str | None] = mapped_column(Text)
    restarts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    image_id: Mapped[str | None] = mapped_column(String(80))  # the image its container was last started on (0011)
    repo_digests: Mapped[list | None] = mapped_column(JSON)  # that image's REPO@sha256:... (0011)


def database_url() -> str:
    import os

    return os.environ.get("DLBOX_DATABASE_URL") or f"sqlite:///{config.home() / 'dlbox.db'}"


class Store:
    def __init__(self, url: str | None = None):
        self.url = url or database_url()
        if self.url.startswith("sqlite:///"):
            _private_files(Path(self.url.removeprefix("sqlite:///")))
        self.engine = create_engine(self.url)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        migrate(self.engine)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        # bumped on every write through this Store, so its readers may cache what they built from it
        self.versions = {"workspaces": 0, "auth": 0, "jobs": 0, "models": 0, "pipelines": 0, "deployments": 0}

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction. The database failing under it (gone, locked, full, unreadable) leaves as a
        StoreUnavailable (503 store_unavailable); what the schema refuses (IntegrityError) stays what it is."""
        from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError, TimeoutError as PoolTimeout

        try:
            with self.sessions() as session, session.begin():
                yield session
        except (OperationalError, InterfaceError, DisconnectionError, PoolTimeout) as exc:
            raise unavailable(exc) from None

    # --- jobs ---------------------------------------------------------------------------

    def _added(self, row):
        with self.session() as s:
            s.add(row)
        return row

    def _got(self, model, key: str):
        with self.session() as s:
            return s.get(model, key)

    def _moved(self, model, key, new: str, *, table: dict, stamps, reason: str | None, fields: dict, counter: str,
               missing: str):
        """The one way a row's state changes: a move that `table` does not allow is refused, and
        the write is a compare-and-set (only where the state is still `old`), so two writers racing (the loop
        and a cancel, say) cannot both move the same row; the loser checks again from the state it finds.
        `stamps(row)`: what the move sets besides `fields` and `reason` (times, counters)."""
        columns = inspect(model).primary_key
        keys = key if isinstance(key, tuple) else (key,)
        while True:
            with self.session() as s:
                row = s.get(model, key)
                if row is None:
                    raise KeyError(missing)
                old = row.state
                check_transition(table, old, new)
                values = dict(fields, state=new)
                if reason is not None:
                    values["reason"] = reason
                values.update(stamps(row))
                same = [column == value for column, value in zip(columns, keys)]
                done = s.execute(update(model).where(*same, model.state == old).values(**values)
                                 .execution_options(synchronize_session=False))
                if done.rowcount == 1:
                    s.refresh(row)
                    self.versions[counter] += 1
                    return row

    def _changed(self, model, key, fields: dict, counter: str) -> None:
        """Change a row's data, never its state (that is _moved's)."""
        assert "state" not in fields
        with self.session() as s:
            row = s.get(model, key)
            for name, value in fields.items():
                setattr(row, name, value)
        self.versions[counter] += 1

    def add_job(self, job: Job) -> Job:
        self._added(job)
        self.versions["jobs"] += 1
        return job

    def get_job(self, job_id: str) -> Job | None:
        with self.session() as s:
            found = s.get(Job, job_id)
            if found is None and len(job_id) >= 4:  # a unique prefix is enough, like git
                if not job_id.isalnum():  # ids are hex: no LIKE wildcards get in
                    return None
                matches = s.scalars(select(Job).where(Job.id.like(f"{job_id}%"))).all()
                found = matches[0] if len(matches) == 1 else None
            return found

    def jobs(self, *, states: set[JobState] | None = None, user: str | None = None,
             newest: int | None = None, skip: int = 0) -> list[Job]:
        """Jobs oldest first; `newest`: only the last N submitted (after skipping the `skip` newest)."""
        with self.session() as s:
            query = select(Job).order_by(Job.submitted_at)
            if newest is not None:  # a list page: the big text columns stay in the database
                query = select(Job).order_by(Job.submitted_at.desc(), Job.id.desc()).limit(newest).offset(skip).options(
                    defer(Job.lock_text), defer(Job.spec_text), defer(Job.git_diff), defer(Job.env))
            if states:
                query = query.where(Job.state.in_([st.value for st in states]))
            if user:
                query = query.where(Job.user == user)
            found = list(s.scalars(query))
            return found[::-1] if newest is not None else found

    def transition(self, job_id: str, new: JobState, *, reason: str | None = None, **fields) -> Job:
        """The one place a job's state changes: checked against the state machine, compare-and-set
        (see _moved), times stamped."""
        def stamps(job: Job) -> dict:
            values = {}
            if new == JobState.RUNNING and job.started_at is None:
                values["started_at"] = time.time()
            if new.is_finished() or new == JobState.FINISHING:  # the container's end, kept once known
                values["ended_at"] = job.ended_at or time.time()
            if new.is_finished():
                # the job is over: its secrets need not be kept (listings never showed them)
                values["params"], values["command"] = redact.mapping(job.params), redact.words(job.command)
            return values

        return self._moved(Job, job_id, new.value, table=ALLOWED,
                           stamps=stamps, reason=reason, fields=fields, counter="jobs", missing=f"no job {job_id}")

    def update(self, job_id: str, **fields) -> None:
        """Change a job's data (never its state)."""
        self._changed(Job, job_id, fields, "jobs")

    # --- users and tokens -------------------------------------------------------------------

    def add_user(self, user: User) -> User:
        return self._added(user)

    def get_user(self, name: str) -> User | None:
        return self._got(User, name)

    def update_user(self, user: User) -> None:
        with self.session() as s:
            s.merge(user)
        self.versions["auth"] += 1

    def users(self, *, limit: int | None = None, skip: int = 0) -> list[User]:
        with self.session() as s:
            return list(s.scalars(select(User).order_by(User.name).limit(limit).offset(skip)))

    def remove_user(self, name: str) -> None:
        """Remove the user and their tokens, and retire the name in the same transaction: runs and
        volumes keep it, so nobody added later may carry it."""
        with self.session() as s:
            s.query(Token).filter(Token.user == name).delete()
            s.query(User).filter(User.name == name).delete()
            s.merge(RetiredName(name=name, removed_at=time.time()))
        self.versions["auth"] += 1

    def retired(self, name: str) -> RetiredName | None:
        return self._got(RetiredName, name)

    def add_token(self, token: Token) -> Token:
        return self._added(token)

    def get_token(self, token_id: str) -> Token | None:
        return self._got(Token, token_id)

    def tokens(self, user: str | None = None, *, limit: int | None = None, skip: int = 0) -> list[Token]:
        with self.session() as s:
            query = select(Token).order_by(Token.created_at, Token.id).limit(limit).offset(skip)
            if user:
                query = query.where(Token.user == user)
            return list(s.scalars(query))

    def revoke_token(self, token_id: str) -> None:
        with self.session() as s:
            token = s.get(Token, token_id)
            if token is not None and token.revoked_at is None:
                token.revoked_at = time.time()
        self.versions["auth"] += 1

    # --- workspaces ---------------------------------------------------------------------------

    def put_workspace(self, workspace: Workspace) -> Workspace:
        """Insert or replace. The loop and a request may both write a new row: the loser merges again."""
        from sqlalchemy.exc import IntegrityError

        for attempt in range(3):
            try:
                with self.session() as s:
                    s.merge(workspace)
                break
            except IntegrityError:
                if attempt == 2:
                    raise
        self.versions["workspaces"] += 1
        return workspace

    def get_workspace(self, name: str) -> Workspace | None:
        return self._got(Workspace, name)

    def workspaces(self, owner: str | None = None, *, limit: int | None = None, skip: int = 0) -> list[Workspace]:
        with self.session() as s:
            query = select(Workspace).order_by(Workspace.name).limit(limit).offset(skip)
            if owner:
                query = query.where(Workspace.owner == owner)
            return list(s.scalars(query))

    def remove_workspace(self, name: str) -> None:
        with self.session() as s:
            s.query(Workspace).filter(Workspace.name == name).delete()
        self.versions["workspaces"] += 1

    # --- metrics ------------------------------------------------------------------------

    def artifact_bytes(self, user: str, *, besides: str | None = None) -> int:
        """Bytes of run artifacts `user` keeps (their storage quota counts these), leaving out job `besides`."""
        with self.session() as s:
            query = select(func.coalesce(func.sum(Job.artifact_bytes), 0)).where(Job.user == user)
            if besides:
                query = query.where(Job.id != besides)
            return int(s.scalar(query))

    def add_snapshot(self, user: str, snapshot_hash: str, *, files: int, size: int) -> None:
        with self.session() as s:
            if s.get(CodeSnapshot, (user, snapshot_hash)) is None:
                s.add(CodeSnapshot(user=user, hash=snapshot_hash, files=files, bytes=size, created_at=time.time()))

    def has_snapshot(self, user: str, snapshot_hash: str) -> bool:
        with self.session() as s:
            return s.get(CodeSnapshot, (user, snapshot_hash)) is not None

    def snapshot_bytes(self, user: str) -> int:
        """Bytes of the code snapshots `user` holds (their storage quota counts these)."""
        with self.session() as s:
            return int(s.scalar(select(func.coalesce(func.sum(CodeSnapshot.bytes), 0))
                                .where(CodeSnapshot.user == user)))

    def referenced_snapshots(self) -> set[str]:
        """The snapshot hashes some run, model version or pipeline refers to: those are kept."""
        with self.session() as s:
            return {h for column in (Job.code_hash, ModelVersion.code_hash, Pipeline.code_hash)
                    for h in s.scalars(select(column).where(column.is_not(None)).distinct())}

    def forget_snapshots(self, hashes: set[str]) -> None:
        """Drop every user's rows of removed snapshots."""
        if hashes:
            with self.session() as s:
                s.query(CodeSnapshot).filter(CodeSnapshot.hash.in_(sorted(hashes))).delete()

    def replace_metrics(self, job_id: str, rows: list[dict]) -> None:
        with self.session() as s:
            s.query(Metric).filter(Metric.job_id == job_id).delete()
            s.add_all(Metric(job_id=job_id, step=r.get("step"), name=str(r["name"]), value=float(r["value"]))
                      for r in rows)
        self.versions["jobs"] += 1

    def last_metrics(self, job_ids: list[str]) -> dict[str, dict[str, float]]:
        """The last value of each metric, for many jobs in one query."""
        last: dict[str, dict[str, float]] = {job_id: {} for job_id in job_ids}
        newest = (select(func.max(Metric.id)).where(Metric.job_id.in_(job_ids))
                  .group_by(Metric.job_id, Metric.name))  # in the database: a long history stays there
        with self.session() as s:
            rows = s.connection().execute(select(Metric.job_id, Metric.name, Metric.value)
                                          .where(Metric.id.in_(newest)).order_by(Metric.id))
            for job_id, name, value in rows:
                last[job_id][name] = value
        return last

    def metrics(self, job_id: str) -> list[MetricRow]:
        """A job's metric history in the order logged. A long history is 100,000 rows: they come through the
        driver's own cursor, as SQLAlchemy's rows cost about four times as much (its ORM objects far more);
        the statement is still SQLAlchemy's, compiled for this database."""
        query = (select(Metric.job_id, Metric.step, Metric.name, Metric.value)
                 .where(Metric.job_id == job_id).order_by(Metric.id)).compile(dialect=self.engine.dialect)
        params = query.params
        if query.positiontup is not None:  # qmark (sqlite) rather than named (psycopg) parameters
            params = tuple(params[name] for name in query.positiontup)
        with self.session() as s:
            cursor = s.connection().connection.dbapi_connection.cursor()
            try:
                cursor.execute(str(query), params)
                return list(map(MetricRow._make, cursor.fetchall()))
            finally:
                cursor.close()

    # --- the model registry ---------------------------------------------------------------------

    def get_model(self, owner: str, name: str) -> Model | None:
        with self.session() as s:
            return s.scalars(select(Model).where(Model.owner == owner, Model.name == name)).first()

    def models(self, *, owner: str | None = None, visible_to: str | None = None, limit: int | None = None,
               skip: int = 0) -> list[Model]:
        """Models by owner and name; `visible_to`: that user's own and the shared ones."""
        from sqlalchemy import or_

        with self.session() as s:
            query = select(Model).order_by(Model.owner, Model.name).limit(limit).offset(skip)
            if owner is not None:
                query = query.where(Model.owner == owner)
            if visible_to is not None:
                query = query.where(or_(Model.owner == visible_to, Model.shared.is_(True)))
            return list(s.scalars(query))

    def add_model_version(self, owner: str, name: str, **fields) -> ModelVersion:
        """Version N of owner's model `name` (made if new), numbered from the model's counter in the same
        transaction: the counter only goes up, so a number is never given twice, deleted or not."""
        from sqlalchemy.exc import IntegrityError

        for attempt in range(3):
            try:
                with self.session() as s:
                    model = s.scalars(select(Model).where(Model.owner == owner, Model.name == name)
                                      .with_for_update()).first()
                    if model is None:
                        model = Model(owner=owner, name=name, next_version=1, shared=False, created_at=time.time())
                        s.add(model)
                        s.flush()
                    number = model.next_version
                    model.next_version = number + 1
                    row = ModelVersion(model_id=model.id, version=number, **fields)
                    s.add(row)
                self.versions["models"] += 1
                return row
            except IntegrityError:  # two first versions of one new name at once: the loser tries again
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def model_versions(self, model_id: int) -> list[ModelVersion]:
        with self.session() as s:
            return list(s.scalars(select(ModelVersion).where(ModelVersion.model_id == model_id)
                                  .order_by(ModelVersion.version)))

    def get_model_version(self, model_id: int, version: int) -> ModelVersion | None:
        with self.session() as s:
            return s.scalars(select(ModelVersion).where(ModelVersion.model_id == model_id,
                                                        ModelVersion.version == version)).first()

    def remove_model_version(self, model_id: int, version: int, *, by: str) -> list[str]:
        """Delete a version; aliases on it are deleted too (each a move in the history). Gives those aliases."""
        with self.session() as s:
            now = time.time()
            gone = list(s.scalars(select(ModelAlias).where(ModelAlias.model_id == model_id,
                                                           ModelAlias.version == version)))
            for alias in gone:
                s.add(AliasMove(model_id=model_id, alias=alias.alias, from_version=version, to_version=None,
                                moved_by=by, moved_at=now))
                s.delete(alias)
            s.query(ModelVersion).filter(ModelVersion.model_id == model_id, ModelVersion.version == version).delete()
        self.versions["models"] += 1
        return [a.alias for a in gone]

    def files_in_use(self, files_hash: str) -> bool:
        with self.session() as s:
            return s.scalars(select(ModelVersion.id).where(ModelVersion.files_hash == files_hash)).first() is not None

    def model_aliases(self, model_id: int) -> list[ModelAlias]:
        with self.session() as s:
            return list(s.scalars(select(ModelAlias).where(ModelAlias.model_id == model_id).order_by(ModelAlias.alias)))

    def move_alias(self, model_id: int, alias: str, version: int | None, *, by: str) -> int | None:
        """Point `alias` at `version` (None: delete it) and record the move, in one transaction.
        Gives the version it pointed at before (None: it was new). A move to where it is is no move."""
        with self.session() as s:
            row = s.get(ModelAlias, (model_id, alias), with_for_update=True)
            before = row.version if row is not None else None
            if before == version:
                return before
            now = time.time()
            if version is None:
                s.delete(row)
            elif row is None:
                s.add(ModelAlias(model_id=model_id, alias=alias, version=version, set_by=by, set_at=now))
            else:
                row.version, row.set_by, row.set_at = version, by, now
            s.add(AliasMove(model_id=model_id, alias=alias, from_version=before, to_version=version, moved_by=by,
                            moved_at=now))
        self.versions["models"] += 1
        return before

    def alias_history(self, model_id: int) -> list[AliasMove]:
        with self.session() as s:
            return list(s.scalars(select(AliasMove).where(AliasMove.model_id == model_id).order_by(AliasMove.id)))

    def share_model(self, model_id: int, shared: bool) -> None:
        with self.session() as s:
            s.get(Model, model_id).shared = shared
        self.versions["models"] += 1

    # --- deployments ----------------------------------------------------------------------------

    def add_deployment(self, row: Deployment) -> Deployment:
        """Insert; an existing name is an IntegrityError (the caller says 'exists')."""
        now = time.time()
        row.created_at = row.created_at or now
        row.updated_at = now
        self._added(row)
        self.versions["deployments"] += 1
        return row

    def get_deployment(self, name: str) -> Deployment | None:
        return self._got(Deployment, name)

    def deployments(self, owner: str | None = None) -> list[Deployment]:
        with self.session() as s:
            query = select(Deployment).order_by(Deployment.name)
            if owner is not None:
                query = query.where(Deployment.owner == owner)
            return list(s.scalars(query))

    def update_deployment(self, name: str, **fields) -> None:
        with self.session() as s:
            s.execute(update(Deployment).where(Deployment.name == name).values(**fields, updated_at=time.time()))
        self.versions["deployments"] += 1

    def remove_deployment(self, name: str) -> None:
        with self.session() as s:
            s.query(Deployment).filter(Deployment.name == name).delete()
        self.versions["deployments"] += 1


    # --- pipelines ------------------------------------------------------------------------

    def add_pipeline(self, pipeline: Pipeline, stages: list[str]) -> Pipeline:
        """The pipeline and its stages (all pending), in one transaction."""
        with self.session() as s:
            s.add(pipeline)
            s.flush()
            for position, name in enumerate(stages):
                s.add(PipelineStage(pipeline_id=pipeline.id, name=name, position=position, state="pending",
                                    job_ids=[], attempts=0))
        self.versions["pipelines"] += 1
        return pipeline

    def get_pipeline(self, pipeline_id: str) -> Pipeline | None:
        with self.session() as s:
            found = s.get(Pipeline, pipeline_id)
            if found is None and 4 <= len(pipeline_id) <= 32 and pipeline_id.isalnum():  # a unique prefix
                matches = s.scalars(select(Pipeline).where(Pipeline.id.like(f"{pipeline_id}%")).limit(2)).all()
                found = matches[0] if len(matches) == 1 else None
            return found

    def pipelines(self, *, user: str | None = None, states: set[str] | None = None, newest: int | None = None,
                  skip: int = 0) -> list[Pipeline]:
        """Pipelines oldest first; `newest`: the last N submitted (after skipping the `skip` newest)."""
        with self.session() as s:
            query = select(Pipeline).order_by(Pipeline.submitted_at)
            if newest is not None:
                query = select(Pipeline).order_by(Pipeline.submitted_at.desc(), Pipeline.id.desc()).limit(
                    newest).offset(skip)
            if states:
                query = query.where(Pipeline.state.in_(sorted(states)))
            if user:
                query = query.where(Pipeline.user == user)
            found = list(s.scalars(query))
            return found[::-1] if newest is not None else found

    def stages(self, pipeline_id: str) -> list[PipelineStage]:
        with self.session() as s:
            return list(s.scalars(select(PipelineStage).where(PipelineStage.pipeline_id == pipeline_id)
                                  .order_by(PipelineStage.position)))

    def pipeline_transition(self, pipeline_id: str, new: str, *, reason: str | None = None, **fields) -> Pipeline:
        """The one place a pipeline's state changes: checked, compare-and-set (see _moved), times stamped."""
        def stamps(row: Pipeline) -> dict:
            values = {}
            if new == "running" and row.started_at is None:
                values["started_at"] = time.time()
            if new in ("promoted", "rejected", "failed", "cancelled"):
                values["ended_at"] = time.time()
            return values

        return self._moved(Pipeline, pipeline_id, new, table=PIPELINE_ALLOWED, stamps=stamps,
                           reason=reason, fields=fields, counter="pipelines", missing=f"no pipeline {pipeline_id}")

    def update_pipeline(self, pipeline_id: str, **fields) -> None:
        self._changed(Pipeline, pipeline_id, fields, "pipelines")

    def stage_transition(self, pipeline_id: str, name: str, new: str, *, reason: str | None = None,
                         **fields) -> PipelineStage:
        """A stage's state change: checked against the machine, compare-and-set (see _moved), times stamped."""
        def stamps(row: PipelineStage) -> dict:
            values = {}
            if new == "running":
                values["started_at"] = row.started_at or time.time()
                values["attempts"] = (row.attempts or 0) + 1
            if new not in ("pending", "running"):
                values["ended_at"] = time.time()
            return values

        return self._moved(PipelineStage, (pipeline_id, name), new, table=STAGE_ALLOWED,
                           stamps=stamps, reason=reason, fields=fields, counter="pipelines",
                           missing=f"no stage {name} in pipeline {pipeline_id}")

    def update_stage(self, pipeline_id: str, name: str, **fields) -> None:
        self._changed(PipelineStage, (pipeline_id, name), fields, "pipelines")

    def start_stage_job(self, pipeline_id: str, name: str, job: Job) -> bool:
        """Add `job` and record it as the running stage's run, in one transaction: a service killed
        between the two cannot leave a job the stage does not know (and would submit again).
        False (and no job) when the stage already has a run."""
        with self.session() as s:
            row = s.get(PipelineStage, (pipeline_id, name), with_for_update=True)
            if row is None or row.state != "running" or row.job_ids:
                return False
            s.add(job)
            row.job_ids = [job.id]
        self.versions["jobs"] += 1
        self.versions["pipelines"] += 1
        return True

    def version_of_pipeline(self, pipeline_id: str) -> tuple[Model, ModelVersion] | None:
        with self.session() as s:
            row = s.scalars(select(ModelVersion).where(ModelVersion.pipeline_id == pipeline_id)).first()
            return (s.get(Model, row.model_id), row) if row is not None else None

    def add_hook_project(self, project: HookProject) -> HookProject:
        return self._added(project)

    def get_hook_project(self, name: str) -> HookProject | None:
        return self._got(HookProject, name)

    def hook_projects(self) -> list[HookProject]:
        with self.session() as s:
            return list(s.scalars(select(HookProject).order_by(HookProject.name)))

    def remove_hook_project(self, name: str) -> bool:
        with self.session() as s:
            return s.query(HookProject).filter(HookProject.name == name).delete() == 1


def unavailable(exc: Exception) -> StoreUnavailable:
    """One line for a database failure: the driver's first line, never the SQL or its parameters
    (SQLAlchemy's own text holds both, and the parameters can be token hashes)."""
    orig = getattr(exc, "orig", None) or exc
    first = redact.text((str(orig).strip().splitlines() or [type(orig).__name__])[0][:200])
    return StoreUnavailable(f"the database failed ({type(orig).__name__}: {first}); try again, or ask the admin "
                            "to check the dlbox database")


def _private_files(db: Path) -> None:
    """The database and its -wal/-shm: 0600, tightened if they exist looser (the default database
    lives in the 0700 home). SQLite makes -wal and -shm with the database file's mode."""
    import os

    if db.name in ("", ":memory:"):
        return
    config.home()  # the default database lives there: made 0700 first
    db.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(db, os.O_RDWR | os.O_CREAT, 0o600))
    for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        try:
            if path.stat().st_mode & 0o077:
                path.chmod(0o600)
        except FileNotFoundError:
            pass


def _sqlite_pragmas(connection, _record) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA secure_delete=ON")  # a scrubbed secret leaves no old copy in the file's free space
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def migrate(engine) -> None:
    """Bring the schema to the newest Alembic revision."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            # SQLite batch migrations rebuild a table (copy, DROP, rename); with foreign keys on, the DROP
            # would cascade, e.g. rebuilding jobs deletes all metrics. Off outside a transaction, or it is ignored.
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            connection.commit()
        try:
            with connection.begin():
                cfg.attributes["connection"] = connection
                command.upgrade(cfg, "head")
                if sqlite and (broken := connection.exec_driver_sql("PRAGMA foreign_key_check").all()):
                    raise RuntimeError(f"migration left rows with dangling foreign keys: {broken[:5]}")
        finally:
            if sqlite:  # the connection goes back to the pool
                connection.exec_driver_sql("PRAGMA foreign_keys=ON")
                connection.commit()

