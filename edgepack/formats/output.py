"""What converters print: progress bars, reports, warnings about optional kernels, and the
C++ libraries' log lines. Hidden during a build (failures still arrive as exceptions);
`edgepack -vv` lets all of it through."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
import warnings
from typing import Optional

# Loggers that report at import or per op, noise for a user: quieted while a converter runs,
# restored after (importing edgepack changes no logger).
NOISY_LOGGERS = ("torchao", "torch.onnx")
LOG = logging.getLogger("edgepack.converters")
FAILURE_LINES = 20  # of a failed converter's own output, kept for `-v`


@contextlib.contextmanager
def converter_output():
    """Swallow the converters' stdout, stderr, Python warnings and noisy loggers, unless
    the edgepack.converters logger is at DEBUG (`-vv`). When the block fails, the last
    FAILURE_LINES of what it printed are logged (INFO: `edgepack -v` shows them)."""
    if LOG.isEnabledFor(logging.DEBUG):
        yield
        return
    levels = {name: logging.getLogger(name).level for name in NOISY_LOGGERS}
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    except BaseException:
        said = [line for line in captured.getvalue().splitlines() if line.strip()][-FAILURE_LINES:]
        if said:
            LOG.info("the converter's last words before it failed:\n  " + "\n  ".join(said))
        raise
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def _fileno(stream) -> Optional[int]:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):  # a test runner's in-memory stream
        return None


@contextlib.contextmanager
def native_output_hidden(*consoles):
    """While the block runs, point file descriptors 1 and 2 at a scratch file: C++ libraries
    (absl, TensorFlow Lite's XNNPACK, onnxruntime) and import-time warnings write there, past
    Python's sys.stderr, where `converter_output` cannot reach. The rich `consoles` that write
    to those descriptors keep writing to the terminal (a duplicate of it). `edgepack -vv`
    lets everything through."""
    if LOG.isEnabledFor(logging.DEBUG):
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    terminals = {fd: os.fdopen(os.dup(copy), "w", buffering=1, encoding="utf-8", errors="replace")
                 for fd, copy in saved.items()}
    moved = {c: c.file for c in consoles if _fileno(c.file) in terminals}
    try:
        with tempfile.TemporaryFile() as sink:
            for fd in saved:
                os.dup2(sink.fileno(), fd)
            for console, stream in moved.items():
                console.file = terminals[_fileno(stream)]
            try:
                yield
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                for fd, copy in saved.items():
                    os.dup2(copy, fd)
    finally:
        for console in moved:
            console.file = None  # back to sys.stdout / sys.stderr, as make_console left it
        for fd, copy in saved.items():
            os.close(copy)
            terminals[fd].close()
