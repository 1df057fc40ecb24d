"""The one error hierarchy of edgepack: every class of both packages, in one tree.

The runtime owns it because the packager depends on the runtime, never the reverse; the
packager's own classes live in edgepack/errors.py (marked [packager] below). Every message
says what failed, why, and how to fix it; only the CLIs turn these errors into one printed
line and an exit code (2 for UsageError, else 1). A foreign library's exception becomes
one of these inside `mapped(...)`, which keeps it as the cause (`-v` prints the chain).

    EdgepackError
    ├── UsageError              a command line that is malformed or contradicts itself
    ├── BundleError             the bundle or its manifest cannot be used
    │   ├── IntegrityError      a file missing, tampered with, or escaping the bundle
    │   │   └── SignatureError  a signature missing where required, or not verifying
    │   └── StoreError          the store cannot do what was asked (no such version)
    ├── PathError               a path that is a symbolic link loop or a name too long
    ├── InputError              inputs that do not fit the model
    │   └── InputTooLarge       an image or text larger than the runtime decodes
    ├── BackendUnavailableError the backend an artifact needs is missing
    ├── InferenceError          the backend failed running an artifact
    │   └── OutputShapeError    an output whose shape changes with the input data
    ├── TelemetryError          no telemetry to report on
    ├── BenchError              a benchmark worker failed
    ├── SubprocessError         a child process timed out or exited non-zero
    ├── TargetError             [packager] a target id or profile file is wrong
    ├── ModelSourceError        [packager] the model, weights, inputs or sample data cannot be used
    ├── BuildError              [packager] an artifact failed to build or its checks
    │   └── BuildFailed         [packager] the build's results fail its checks (`.result`)
    ├── CompareError            [packager] bench results that cannot be compared
    ├── DeviceError             [packager] a device spec or inventory is wrong, or unreachable
    └── EmulationError          [packager] the emulated environment cannot be prepared or run
"""

from contextlib import contextmanager
from typing import Iterator

__all__ = [
    "EdgepackError",
    "UsageError",
    "BundleError",
    "IntegrityError",
    "SignatureError",
    "StoreError",
    "PathError",
    "InputError",
    "InputTooLarge",
    "BackendUnavailableError",
    "TelemetryError",
    "InferenceError",
    "OutputShapeError",
    "BenchError",
    "SubprocessError",
    "first_line",
    "last_line",
    "causes",
    "mapped",
]


def first_line(exc: BaseException, limit: int = 300) -> str:
    """A foreign exception as one short line for our messages (some have none, some have many)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:limit]}" if text else type(exc).__name__


def last_line(output: str, default: str, skip: tuple[str, ...] = ()) -> str:
    """The last non-blank line of a child process's output (where Python puts the error),
    ignoring lines that start with `skip`; `default` when there is none."""
    lines = [line for line in (output or "").splitlines() if line.strip() and not line.startswith(skip)]
    return lines[-1].strip() if lines else default


class EdgepackError(Exception):
    """Base class of every error edgepack raises on purpose."""


class UsageError(EdgepackError):
    """The command line is malformed or contradicts itself (the CLIs exit 2, like click)."""


class BundleError(EdgepackError):
    """The bundle directory or its manifest cannot be used."""


class IntegrityError(BundleError):
    """A bundle file is missing, tampered with or escapes the bundle directory."""


class SignatureError(IntegrityError):
    """A bundle's signature is missing where required, or does not verify."""


class StoreError(BundleError):
    """The store cannot do what was asked (no such version, nothing to roll back to)."""


class PathError(EdgepackError):
    """A path that cannot be used as a path: a symbolic link loop, or a name longer than the
    file system allows (NAME_MAX per component, PATH_MAX in all). Raised by
    `files.checked_path`, the one rule the bundle reader, the store and `-o` share."""


class InputError(EdgepackError):
    """Inputs given to a model do not match what the model expects."""


class InputTooLarge(InputError):
    """An image (or text) beyond the size the runtime will decode: a decompression bomb, or
    a photo far larger than any model input needs (the server answers 413)."""


class BackendUnavailableError(EdgepackError):
    """The inference backend an artifact needs is not installed or cannot start."""


class TelemetryError(EdgepackError):
    """The telemetry database cannot be read for a report (recording never raises)."""


class InferenceError(EdgepackError):
    """The backend failed while running an artifact (a damaged file, an unsupported op)."""


class OutputShapeError(InferenceError):
    """A model's output changed shape from one input to another (a data-dependent shape, e.g.
    nonzero or a boolean mask): bundles declare fixed output shapes."""


class BenchError(EdgepackError):
    """A benchmark worker could not run or measure an artifact."""


class SubprocessError(EdgepackError):
    """A child process (a benchmark worker, an emulator, a remote command) timed out or
    exited non-zero; raised by `subprocesses.run_checked`, the message ends with its last
    line of output."""


def causes(exc: BaseException) -> list[str]:
    """The chain under `exc` (`raise ... from cause`), outermost first, one line each."""
    chain, seen = [], {id(exc)}
    while exc.__cause__ is not None and id(exc.__cause__) not in seen:
        exc = exc.__cause__
        seen.add(id(exc))
        chain.append(first_line(exc))
    return chain


@contextmanager
def mapped(error: type[Exception], what: str, fix: str = "",
           catch: tuple[type[Exception], ...] = (Exception,)) -> Iterator[None]:
    """Inside the block, an exception of `catch` becomes `error` saying "WHAT (WHY); FIX",
    with the original as its cause. Errors already of type `error` pass unchanged; another
    EdgepackError lends its message as the why (it already says what to do)."""
    try:
        yield
    except error:
        raise
    except catch as exc:
        why = str(exc) if isinstance(exc, EdgepackError) else first_line(exc)
        raise error(f"{what} ({why})" + (f"; {fix}" if fix else "")) from exc
