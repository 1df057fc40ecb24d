"""edgepack: quantize, export and validate PyTorch models for ARM and x86 edge devices."""

__version__ = "0.1.0"

from .errors import EdgepackError  # noqa: E402
from .pipeline import BuildFailed, BuildResult, build  # noqa: E402
from .targets import TargetProfile, load_target, target_ids  # noqa: E402

__all__ = ["build", "BuildResult", "BuildFailed", "load_target", "target_ids", "TargetProfile",
           "EdgepackError", "__version__"]
