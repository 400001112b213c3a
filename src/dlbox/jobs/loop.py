"""The reconcile loop: makes the engine match what the store says should run (jobs, workspaces, and the
passes the service adds: deployments)."""

from __future__ import annotations

import threading
import time

from dlbox.engine import api as engine
from dlbox.jobs import runner as jobs
from dlbox.store.db import Store
from dlbox.workspaces import idle, records

LOOP_PERIOD = 1.0
EVENTS_RETRY = 5.0


class Loop:
    """The reconcile loop: wakes every second, or at once when a request asks it to or one of
    this service's job containers ends (the engine's die events)."""

    def __init__(self, store: Store, capacity: jobs.Capacity | None = None, idle_stop: int | None = None):
        self.store = store
        self.idle = idle.Watcher(idle_stop)  # samples each workspace at most every few seconds (idle.MIN_PERIOD)
        self.idle_error: str | None = None
        self.reconciler = jobs.Reconciler(store, capacity or jobs.Capacity.detect())
        self.wake_event = threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True, name="reconcile")
        self.watcher = threading.Thread(target=self._watch_engine, daemon=True, name="engine-events")
        self.last_error: str | None = None
        # /api/health: "following" the engine's die events, or "reconnecting" (ended jobs are then
        # noticed by the 1 s period only)
        self.events = "starting"
        self.stopping = threading.Event()
        # more work of each pass, added by the layers above (the pipeline driver): called after the jobs'
        # pass, each guarded on its own so one failing never stops the jobs
        self.passes: list = []
        self.pass_errors: dict[str, str] = {}

    def start(self) -> None:
        self.thread.start()
        self.watcher.start()

    def stop(self) -> None:
        """End the loop after its current pass (the event watcher only wakes it, so it may stay)."""
        self.stopping.set()
        self.wake()
        self.thread.join()

    def _watch_engine(self) -> None:
        """Wake on every die (or reconnect) of our job containers; the loop itself looks at what changed."""
        labels = [engine.MANAGED, "dlbox.kind=job", f"dlbox.home={jobs.owner_label()}"]
        while not self.stopping.is_set():
            try:
                for event in engine.container_events(labels):
                    if event["action"] == "disconnected":
                        self.events = "reconnecting"
                        self.reconciler.outages.gone(time.time())
                    elif event["action"] in ("connected", "reconnected"):
                        self.events = "following"
                        self.reconciler.outages.back(time.time())
                    self.wake()
            except Exception:  # noqa: BLE001 - never take the service down; the 1 s period still runs
                self.events = "reconnecting"
                self.reconciler.outages.gone(time.time())
                time.sleep(EVENTS_RETRY)

    def wake(self) -> None:
        self.wake_event.set()

    def run_once(self) -> None:
        with self.lock:
            self.reconciler.run_once()
            try:
                self.idle.run_once()  # a workspace it stops: its row follows in the sync below
                self.idle_error = None
            except Exception as exc:  # noqa: BLE001 - idle stop failing must not stop jobs or rows
                self.idle_error = f"{type(exc).__name__}: {exc}"
            records.sync(self.store)
            for work in self.passes:
                name = getattr(work, "__qualname__", repr(work))
                try:
                    work()
                    self.pass_errors.pop(name, None)
                except Exception as exc:  # noqa: BLE001 - the jobs' loop goes on; health shows it
                    self.pass_errors[name] = f"{type(exc).__name__}: {exc}"

    def _run(self) -> None:
        while not self.stopping.is_set():
            self.wake_event.wait(LOOP_PERIOD)
            self.wake_event.clear()
            if self.stopping.is_set():
                break
            try:
                self.run_once()
                self.last_error = None
            except Exception as exc:  # noqa: BLE001 - keep looping; /api/health and `dlbox jobs` show it
                self.last_error = f"{type(exc).__name__}: {exc}"
