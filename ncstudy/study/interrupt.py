"""Ctrl-C, SIGTERM, `ray job stop` and a closing terminal (SIGHUP) for the study driver: stop
gracefully once, at once twice.

Ray Tune's own SIGINT handler makes `Tuner.fit()` return normally after an interrupt, so the driver
could not tell an interrupted study from a finished one (it exited 0). Here the CLI owns the
signals instead (`TUNE_DISABLE_SIGINT_HANDLER=1`, a documented Tune switch): the first SIGINT or
SIGTERM is recorded and, while Tune's loop runs, forwarded as SIGUSR1, which Tune always treats as
"stop the experiment and save its state one last time"; outside that loop, and on a second signal,
it raises KeyboardInterrupt, which ends the command at once. The exit status is 128 + the signal
(130 for Ctrl-C, 143 for SIGTERM), as a shell reports a process that a signal ended.

SIGHUP (the terminal closed, an ssh session dropped) is handled like SIGTERM, exit status 129: it
was ending the driver with no word and leaving the study and its MLflow runs RUNNING. A terminal
that is gone cannot be written to (EIO), so its standard streams are pointed at /dev/null first,
and the driver's clean-up still runs to the end (what it would have printed is in the study folder:
state.json, report.md).
"""

from __future__ import annotations

import os
import signal
import sys
from contextlib import contextmanager


class Interruption:
    """The signal that interrupted this process, if any (one per process: see `INTERRUPTION`)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.stopped_at_once = False  # a signal raised KeyboardInterrupt (a second one, or none in Tune's loop)
        self._tune_running = False
        self._installed = False

    def install(self) -> None:
        """Take SIGINT, SIGTERM and SIGHUP; called once by the CLI before any work."""
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
        for signum in HANDLED:
            signal.signal(signum, self._handle)
        self._installed = True

    def reclaim(self) -> None:
        """Take the signals back after `ray.init`, whose core worker installs a SIGTERM handler of
        its own in the driver (it logs "SIGTERM received" and ends the process at once)."""
        if self._installed:
            self.install()

    @property
    def interrupted(self) -> bool:
        return self.signum is not None

    @property
    def exit_status(self) -> int:
        return 128 + (self.signum or signal.SIGINT)

    @contextmanager
    def tune_loop(self):
        """While Tune's loop runs, a first signal asks Tune to stop and save; else it raises at once."""
        if self.interrupted:  # a signal arrived while the study was being prepared
            raise KeyboardInterrupt
        if hasattr(signal, "SIGUSR1"):  # until Tune installs its own handler, SIGUSR1 means "stop now"
            signal.signal(signal.SIGUSR1, self._before_tune)
        self._tune_running = True
        try:
            yield
        finally:
            self._tune_running = False

    @staticmethod
    def _before_tune(signum: int, frame) -> None:
        raise KeyboardInterrupt

    def _handle(self, signum: int, frame) -> None:
        first = self.signum is None
        if first:
            self.signum = signum
        if signum == getattr(signal, "SIGHUP", None):
            _leave_closed_terminal()
        if first and self._tune_running and hasattr(signal, "SIGUSR1"):
            try:
                print(
                    "\nstopping: Ray Tune saves the study's state (Ctrl-C again to stop at once)",
                    file=sys.stderr, flush=True,
                )  # fmt: skip
            except OSError:  # a terminal that is gone
                pass
            os.kill(os.getpid(), signal.SIGUSR1)
            return
        self.stopped_at_once = True
        raise KeyboardInterrupt


@contextmanager
def hangup_ignored_by_children():
    """Processes started in this block ignore SIGHUP (an ignored signal stays ignored across fork and
    exec): the private local Ray's GCS and raylet, and the workers they start, share the driver's
    terminal and process group, and a closing terminal killed them before Tune could save the
    study's state. The driver itself handles SIGHUP again after the block."""
    if not hasattr(signal, "SIGHUP"):
        yield
        return
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGHUP, previous)


def _leave_closed_terminal() -> None:
    """Standard streams that are a terminal now write to /dev/null (a hung-up terminal raises EIO on
    every write); streams redirected to a file or a pipe are kept."""
    null = os.open(os.devnull, os.O_WRONLY)
    for descriptor in (1, 2):
        if os.isatty(descriptor):
            os.dup2(null, descriptor)
    os.close(null)


HANDLED = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))
INTERRUPTION = Interruption()
