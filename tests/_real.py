"""Real servers and engines the tests start: where to find them, and when to skip.

A test that needs a real program (``redis-server``, ``etcd``, ``podman``)
calls :func:`require_program`. When the program is not installed the test is
skipped with the exact ``apt-get install`` line that brings it, so the
README's one-line test command works on any machine. CI sets
``STANDBY_REQUIRE_REAL=1`` (see ``.ci/run``): there a missing program fails
the test instead, so CI never skips a real part.

Helpers for processes the fixtures start (free ports, stopping by PID,
failing with the server's log) live here too, so each fixture does not
write them again.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from standby.testing._relay_process import free_port

__all__ = [
    "REQUIRE_REAL",
    "fail_with_log",
    "free_port",
    "require_program",
    "stop_process",
    "wait_until",
]

#: Set by ``.ci/run``: a missing real part is a failure, never a skip.
REQUIRE_REAL = os.environ.get("STANDBY_REQUIRE_REAL", "") not in ("", "0")

#: ``max_blocking`` for the conformance suites run against real servers and
#: engines. They share the machine's two cores with this process, and a loop
#: stall past the suites' default 50 ms comes now and then with no adapter to
#: blame (51 to 183 ms seen on a loaded CI machine, after the harness takes
#: off CPU waits and garbage collection). A call that really blocks, like the
#: planted 200 ms ``time.sleep`` the memory tests catch, still fails here.
REAL_MAX_BLOCKING = 0.15


def require_program(program: str, package: str) -> str:
    """The path of ``program``; skip (or, in CI, fail) when it is not installed."""
    found = shutil.which(program)
    if found is None:
        for directory in ("/usr/sbin", "/usr/bin", "/sbin", "/usr/local/bin"):
            candidate = Path(directory) / program
            if candidate.exists():
                found = str(candidate)
                break
    if found is not None:
        return found
    text = f"`{program}` is not installed: apt-get install -y {package}"
    if REQUIRE_REAL:
        pytest.fail(f"{text} (STANDBY_REQUIRE_REAL is set, so this is not skipped)", pytrace=False)
    pytest.skip(text)


def wait_until(probe: Callable[[], bool], *, timeout: float, interval: float = 0.05) -> bool:
    """Poll ``probe`` until it holds or ``timeout`` real seconds passed (fixtures only)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe():
            return True
        time.sleep(interval)
    return probe()


def stop_process(process: subprocess.Popen[bytes], *, timeout: float = 5.0) -> None:
    """Stop a process this test run started, by its PID: SIGTERM, then SIGKILL."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


def fail_with_log(what: str, log: Path, *, lines: int = 40) -> None:
    """Fail the test naming ``what`` could not start, with the tail of its log."""
    try:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        tail = f"(no log: {exc})"
    pytest.fail(f"{what} did not start; last lines of {log}:\n{tail}", pytrace=False)
