"""edgepack: quantize, export and validate PyTorch models for ARM and x86 edge devices."""

__version__ = "0.1.0"

from .errors import BuildFailed, EdgepackError  # noqa: E402
from .request import BuildRequest  # noqa: E402  (its parts: edgepack.request)
from .targets import TargetProfile, load_target, target_ids  # noqa: E402

__all__ = ["build", "build_from", "BuildRequest", "BuildResult", "BuildFailed", "load_target", "target_ids",
           "TargetProfile", "EdgepackError", "__version__"]


def __getattr__(name):
    # The build pulls in torch and the converters (~1.5 s): only when it is used, so that
    # `edgepack --help`, `targets` and `compare` start fast and run without torch.
    if name in ("build", "build_from", "BuildResult"):
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'edgepack' has no attribute {name!r}")
