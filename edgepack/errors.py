"""Packager errors: subclasses of the runtime's one hierarchy. The whole tree, these
included, is drawn once in edgepack_runtime/errors.py; `mapped` turns a library's
exception into one of them, keeping it as the cause.
"""

from edgepack_runtime.errors import BundleError, EdgepackError, InputError, UsageError, mapped
from edgepack_runtime.typed import did_you_mean

__all__ = ["EdgepackError", "BundleError", "InputError", "UsageError", "TargetError", "ModelSourceError",
           "BuildError", "BuildFailed", "CompareError", "DeviceError", "EmulationError", "did_you_mean", "mapped"]


class TargetError(EdgepackError):
    """A target id or profile file is wrong."""


class ModelSourceError(EdgepackError):
    """The model factory, weights or input specification cannot be used."""


class BuildError(EdgepackError):
    """The build ran but an artifact failed its checks or could not be written."""


class BuildFailed(BuildError):
    """The build produced results but they fail its checks; `.result` (a BuildResult) holds
    them, and `.results` every target's in a multi-target build (the bundles that passed
    are written)."""

    def __init__(self, message: str, result, results=None):
        super().__init__(message)
        self.result = result
        self.results = results if results is not None else [result]


class CompareError(EdgepackError):
    """Benchmark results that cannot be compared."""


class DeviceError(EdgepackError):
    """A device spec or inventory is wrong, or a device cannot be reached."""


class EmulationError(EdgepackError):
    """The emulated environment cannot be prepared or run."""
