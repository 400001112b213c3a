"""Progress for long work: a Rich status line on a terminal, plain lines otherwise.

Progress goes to stderr so that `--json` output on stdout stays clean.
"""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, *, quiet: bool = False):
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self._status = None
        self._started = time.monotonic()

    def __enter__(self) -> Progress:
        if self.tty and not self.quiet:
            from rich.console import Console

            self._console = Console(stderr=True)
            self._status = self._console.status("starting")
            self._status.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._status is not None:
            self._status.stop()

    def step(self, message: str) -> None:
        """A milestone: always shown."""
        if self.quiet:
            return
        elapsed = time.monotonic() - self._started
        if self._status is not None:
            self._console.print(f"[bold]>[/] {message} [dim]({elapsed:.0f}s)[/]")
            self._status.update(message)
        else:
            print(f"> {message} ({elapsed:.0f}s)", file=sys.stderr, flush=True)

    def line(self, text: str) -> None:
        """Detail (build output): the live status line on a terminal, a plain line otherwise."""
        if self.quiet:
            return
        if self._status is not None:
            self._status.update(text.strip()[:120])
        else:
            print(f"  {text}", file=sys.stderr, flush=True)

    def show_tail(self, lines: list[str]) -> None:
        """After a failure on a terminal, the last output lines that the status line hid."""
        if self._status is not None and lines:
            for text in lines:
                self._console.print(f"  {text}", markup=False, highlight=False)
