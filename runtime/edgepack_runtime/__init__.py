"""edgepack-runtime: run edgepack bundles on the device. Depends on numpy and one backend; never torch."""

from .bundle import Bundle, open_bundle
from .errors import BackendUnavailableError, BundleError, EdgepackError, InferenceError, InputError, IntegrityError
from .manifest import Artifact, Manifest, TensorSpec
from .model import Model, load
from .parity import self_test
from .verdict import Verdict

__version__ = "0.1.0"

__all__ = [
    "load",
    "Model",
    "open_bundle",
    "Bundle",
    "Manifest",
    "Artifact",
    "TensorSpec",
    "self_test",
    "Verdict",
    "EdgepackError",
    "BundleError",
    "IntegrityError",
    "InputError",
    "InferenceError",
    "BackendUnavailableError",
    "__version__",
]
