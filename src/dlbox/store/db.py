"""The one module that talks to the database: jobs and their run records, metrics, users and
their API tokens, and the workspaces the team server knows about.

SQLAlchemy over SQLite (WAL) by default, or the URL in DLBOX_DATABASE_URL. The schema is
made by Alembic migrations (src/dlbox/store/migrations), run when the store opens.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import JSON, BigInteger, func, Boolean, Float, ForeignKey, Integer, String, Text, create_engine, event, select, update
from sqlalchemy.orm import DeclarativeBase, defer, Mapped, Session, mapped_column, sessionmaker

from dlbox import config, redact
from dlbox.errors import StoreUnavailable
from dlbox.jobs.state import JobState, check_transition


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


class Metric(Base):
    __tablename__ = "metrics"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    step: Mapped[int | None] = mapped_column(BigInteger)  # 0006: a job may count steps past 2^31
    name: Mapped[str] = mapped_column(String(128))
    value: Mapped[float] = mapped_column(Float)


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
        self.versions = {"workspaces": 0, "auth": 0, "jobs": 0}

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
        """The one place a job's state changes; checks the state machine and stamps the time.

        Compare-and-set: the write happens only if the state is still the one checked, so two
        writers racing (the loop and a cancel, say) cannot both move the same job.
        """
        while True:
            with self.session() as s:
                job = s.get(Job, job_id)
                if job is None:
                    raise KeyError(f"no job {job_id}")
                old = job.state
                check_transition(JobState(old), new)
                values = dict(fields, state=new.value)
                if reason is not None:
                    values["reason"] = reason
                if new == JobState.RUNNING and job.started_at is None:
                    values["started_at"] = time.time()
                if new.is_finished() or new == JobState.FINISHING:  # the container's end, kept once known
                    values["ended_at"] = job.ended_at or time.time()
                if new.is_finished():
                    # the job is over: its secrets need not be kept (listings never showed them)
                    values["params"], values["command"] = redact.mapping(job.params), redact.words(job.command)
                done = s.execute(update(Job).where(Job.id == job_id, Job.state == old).values(**values)
                                 .execution_options(synchronize_session=False))
                if done.rowcount == 1:
                    s.refresh(job)
                    self.versions["jobs"] += 1
                    return job
            # another writer moved the job first: check the transition again from its new state

    def update(self, job_id: str, **fields) -> None:
        """Change a job's data (never its state)."""
        assert "state" not in fields
        with self.session() as s:
            job = s.get(Job, job_id)
            for key, value in fields.items():
                setattr(job, key, value)
        self.versions["jobs"] += 1

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
        """The snapshot hashes some run refers to: those are kept."""
        with self.session() as s:
            return {h for h in s.scalars(select(Job.code_hash).where(Job.code_hash.is_not(None)).distinct())}

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
        with self.session() as s:
            rows = s.execute(select(Metric.job_id, Metric.name, Metric.value)
                             .where(Metric.job_id.in_(job_ids)).order_by(Metric.id))
            for job_id, name, value in rows:
                last[job_id][name] = value
        return last

    def metrics(self, job_id: str) -> list[Metric]:
        with self.session() as s:
            return list(s.scalars(select(Metric).where(Metric.job_id == job_id).order_by(Metric.id)))


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

