"""Packager errors: subclasses of the runtime's one hierarchy (`EdgepackError`)."""

from edgepack_runtime.errors import BundleError, EdgepackError, InputError

__all__ = ["EdgepackError", "BundleError", "InputError", "TargetError", "ModelSourceError", "BuildError", "BuildFailed"]


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
