"""One way to run a child process: its timeout, its failure to start and its non-zero exit
each become one typed error whose message ends with the child's last line of output."""

from __future__ import annotations

import subprocess
from typing import Any, Optional, Sequence, Type

from .errors import EdgepackError, SubprocessError, first_line, last_line

__all__ = ["run_checked", "DEFAULT_TIMEOUT_S"]

DEFAULT_TIMEOUT_S = 600.0  # no child runs unbounded: a hung converter or emulator ends as an error


def run_checked(argv: Sequence[str], what: str, fix: str, *, timeout: Optional[float] = DEFAULT_TIMEOUT_S,
                error: Type[EdgepackError] = SubprocessError, check: bool = True, skip: tuple[str, ...] = (),
                **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """`subprocess.run(argv)` with text output captured. Raises `error` (a class of the one
    hierarchy) saying `what` failed and `fix` when the child cannot start, runs longer than
    `timeout` seconds, or (with `check`) exits non-zero; lines of output starting with `skip`
    (an emulator's chatter) are not taken as the reason."""
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, **kwargs)
    except subprocess.TimeoutExpired:
        raise error(f"{what} took longer than {timeout:g} s and was stopped; {fix}") from None
    except OSError as exc:  # the program is missing or cannot execute
        raise error(f"{what} could not start ({first_line(exc, 160)}); {fix}") from exc
    if check and proc.returncode != 0:
        reason = last_line(proc.stderr or proc.stdout, f"exit code {proc.returncode}", skip=skip)
        raise error(f"{what} failed ({_exit(proc.returncode)}: {reason[:300]}); {fix}")
    return proc


def _exit(code: int) -> str:
    """"exit code 3", or for a child killed by a signal (an abort, a segfault) its name."""
    if code < 0:
        import signal

        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
