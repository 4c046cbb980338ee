"""Where a long job is: one line per stage on its console, and an optional stop there.

The stages of `fascl index build` and `fascl reindex`, in order: ingest (bars read or imported),
embed (embedding starts), write (a date's files written, not yet durable), publish (the version is
about to be renamed into place), activate (published, about to be made active in SQL), prune (active,
about to delete old versions).

With FASCL_STOP_AT=<stage> the job stops itself (SIGSTOP) on reaching that stage, to be resumed
(SIGCONT) or killed from outside at exactly that point: this is how the fault tests kill a job at
each stage and check that the served version survives and a rerun completes.
"""

from __future__ import annotations

import os
import signal
import sys

from rich.console import Console

STOP_ENV = "FASCL_STOP_AT"
STAGES = ("ingest", "embed", "write", "publish", "activate", "prune")


def reached(stage: str, console: Console) -> None:
    """Report `stage`; stop here if FASCL_STOP_AT names it."""
    console.print(f"stage: {stage}", style="dim")
    if os.environ.get(STOP_ENV) == stage:
        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGSTOP)
