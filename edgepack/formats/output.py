"""What converters print: progress bars, reports, warnings about optional kernels. Hidden
during a build (failures still arrive as exceptions); `edgepack -vv` lets all of it through."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings

# Loggers that report at import or per op, noise for a user: quieted while a converter runs,
# restored after (importing edgepack changes no logger).
NOISY_LOGGERS = ("torchao", "torch.onnx")
LOG = logging.getLogger("edgepack.converters")


@contextlib.contextmanager
def converter_output():
    """Swallow the converters' stdout, stderr, Python warnings and noisy loggers, unless
    the edgepack.converters logger is at DEBUG (`-vv`)."""
    if LOG.isEnabledFor(logging.DEBUG):
        yield
        return
    levels = {name: logging.getLogger(name).level for name in NOISY_LOGGERS}
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
