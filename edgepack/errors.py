"""Packager errors: subclasses of the runtime's one hierarchy (edgepack_runtime/errors.py).

    EdgepackError
    ├── TargetError        a target id or profile file is wrong
    ├── ModelSourceError   the model, weights, inputs or sample data cannot be used
    ├── BuildError         an artifact failed to build or its checks
    │   └── BuildFailed    the build's results fail its checks (`.result` holds them)
    ├── CompareError       bench results that cannot be compared
    ├── DeviceError        a device spec or inventory is wrong, or a device unreachable
    └── EmulationError     the emulated environment cannot be prepared or run
"""

from edgepack_runtime.errors import BundleError, EdgepackError, InputError, UsageError
from edgepack_runtime.typed import did_you_mean

__all__ = ["EdgepackError", "BundleError", "InputError", "UsageError", "TargetError", "ModelSourceError",
           "BuildError", "BuildFailed", "CompareError", "DeviceError", "EmulationError", "did_you_mean"]


class TargetError(EdgepackError):
    """A target id or profile file is wrong."""


class ModelSourceError(EdgepackError):
    """The model factory, weights or input specification cannot be used."""


class BuildError(EdgepackError):
    """The build ran but an artifact failed its checks or could not be written."""


class BuildFailed(BuildError):
    """The build produced results but they fail its checks; `.result` (a BuildResult) holds them."""

    def __init__(self, message: str, result):
        super().__init__(message)
        self.result = result


class CompareError(EdgepackError):
    """Benchmark results that cannot be compared."""


class DeviceError(EdgepackError):
    """A device spec or inventory is wrong, or a device cannot be reached."""


class EmulationError(EdgepackError):
    """The emulated environment cannot be prepared or run."""
