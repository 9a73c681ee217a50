"""Stall watchdog for long-running commands: a stall becomes an error naming the stage.

A command marks what it is doing as stages; a background thread checks that each stage
makes progress within its limit. When a stage goes silent for longer than its limit, the
watchdog prints which stage stalled and for how long, dumps every thread's Python stack
to stderr (`faulthandler`), and ends the process with exit status `STALL_EXIT_CODE` (3),
instead of hanging without a word (a wedged XLA runtime leaves every thread idle; no
Python exception can interrupt it, so the process is ended with `os._exit`).

    from pgjax import watchdog

    with watchdog.stage("compiling the training program"):
        train.compile_chunk(state, n)
    with watchdog.stage("training", timeout_s=600) as st:
        for chunk in chunks:
            run_chunk(chunk)
            st.beat()                 # progress: the limit counts again from now
    watchdog.beat()                   # the same, for the innermost stage open anywhere

- `stage(name, timeout_s=None)`: a context manager; stages nest (the innermost one is
  watched; leaving it resumes watching the outer one with a fresh limit).
  `timeout_s=None` takes the default limit; a limit <= 0 leaves the stage unwatched.
- `Stage.beat()` / `watchdog.beat()`: progress heartbeats; each restarts the limit.
- Default limit: `DEFAULT_TIMEOUT_S` (1800 s: a compile or a chunk on a slow, shared
  machine stays far below it), or the environment variable `PGJAX_STALL_TIMEOUT_S`
  (seconds; `0` turns the watchdog off). The variable also overrides every explicit
  `timeout_s`, so a user can always widen (or narrow) all limits at once.
- `PGJAX_STALL_DUMP_NATIVE=1` additionally asks `py-spy dump --native` (if installed)
  for the native stacks before exiting: XLA's worker threads are invisible to faulthandler.

Only the `pgjax` commands use it; importing this module starts no thread (the checker
thread starts with the first stage) and changes no setting.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

ENV_VAR = "PGJAX_STALL_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 1800.0
STALL_EXIT_CODE = 3
POLL_S = 0.25


def configured_timeout(timeout_s: float | None = None) -> float:
    """The limit in seconds a stage gets: `PGJAX_STALL_TIMEOUT_S` if set, else `timeout_s`,
    else `DEFAULT_TIMEOUT_S`; <= 0 means unwatched."""
    raw = os.environ.get(ENV_VAR, "").strip()
    if raw:
        try:
            return float(raw)
        except ValueError:
            raise ValueError(f"{ENV_VAR}={raw!r}: expected a number of seconds (0 turns the watchdog off)") from None
    return DEFAULT_TIMEOUT_S if timeout_s is None else float(timeout_s)


@dataclass
class Stage:
    """One watched stage: its name, limit (s) and time of the last progress (monotonic s)."""
    name: str
    timeout_s: float
    last_beat: float = field(default_factory=time.monotonic)
    started: float = field(default_factory=time.monotonic)

    def beat(self) -> None:
        """Progress: the stage's limit counts again from now."""
        self.last_beat = time.monotonic()


_lock = threading.Lock()
_stack: list[Stage] = []
_thread: threading.Thread | None = None


def beat() -> None:
    """Progress for the innermost open stage (no-op outside any stage)."""
    with _lock:
        if _stack:
            _stack[-1].beat()


@contextlib.contextmanager
def stage(name: str, timeout_s: float | None = None):
    """Watch the enclosed code as stage `name` (see the module docstring); yields the `Stage`."""
    st = Stage(name, configured_timeout(timeout_s))
    with _lock:
        _stack.append(st)
        _ensure_thread()
    try:
        yield st
    finally:
        with _lock:
            _stack.remove(st)
            if _stack:
                _stack[-1].beat()  # the outer stage was not watched meanwhile


def _ensure_thread() -> None:
    global _thread
    if _thread is None or not _thread.is_alive():
        _thread = threading.Thread(target=_watch, name="pgjax-watchdog", daemon=True)
        _thread.start()


def _watch() -> None:
    while True:
        time.sleep(POLL_S)
        with _lock:
            st = _stack[-1] if _stack else None
            now = time.monotonic()
            stalled = st is not None and st.timeout_s > 0 and now - st.last_beat > st.timeout_s
        if stalled:
            _fire(st, now)


def _fire(st: Stage, now: float) -> None:
    """Report the stall of `st` on stderr with every thread's stack and end the process."""
    silent = now - st.last_beat
    msg = (f"\npgjax: error: stalled in stage '{st.name}': no progress for {silent:.0f} s "
           f"(limit {st.timeout_s:g} s, stage started {now - st.started:.0f} s ago; "
           f"set {ENV_VAR}=<seconds> to change the limit, 0 to turn the watchdog off). "
           f"Thread stacks follow.\n")
    try:
        sys.stderr.write(msg)
        sys.stderr.flush()
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        if os.environ.get("PGJAX_STALL_DUMP_NATIVE") == "1" and shutil.which("py-spy"):
            subprocess.run(["py-spy", "dump", "--native", "--pid", str(os.getpid())],
                           stdout=sys.stderr, stderr=sys.stderr, timeout=60, check=False)
        sys.stderr.write(f"pgjax: error: stalled in stage '{st.name}' (exit status {STALL_EXIT_CODE})\n")
        sys.stderr.flush()
    finally:
        os._exit(STALL_EXIT_CODE)  # a wedged runtime ignores exceptions and exit handlers
