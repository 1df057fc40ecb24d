"""torchvision's own transforms and ImageNet class names, as the reference the runtime's
image preprocessing is checked against.

torchvision 0.28 from PyPI does not import against torch 2.13.0+cpu (its C extension), but
its transforms on PIL images are pure Python: its .py files are taken out of the wheel and
`torchvision.transforms` imported without the package's __init__ (which loads the extension).
"""

from __future__ import annotations

import ast
import sys
import types
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent))  # examples/: the shared wheel helper
from wheel_member import wheel_tree  # noqa: E402

TORCHVISION_WHEEL = "torchvision==0.28.0"


def torchvision_sources(cache: Path) -> Path:
    """The wheel's Python files under `cache`/torchvision-py (fetched once)."""
    root = cache / "torchvision-py"
    if not (root / "torchvision" / "transforms" / "transforms.py").is_file():
        cache.mkdir(parents=True, exist_ok=True)
        wheel_tree(TORCHVISION_WHEEL, "torchvision/", ".py", root)
    return root


@contextmanager
def torchvision_transforms(cache: Path) -> Iterator:
    """`torchvision.transforms` (Resize, CenterCrop, ToTensor, Normalize, ...) from the wheel,
    for the `with` block only: the stand-in package leaves sys.modules afterwards, so that
    libraries probing for torchvision (transformers does) never meet it."""
    package = types.ModuleType("torchvision")
    package.__path__ = [str(torchvision_sources(cache) / "torchvision")]
    sys.modules["torchvision"] = package
    try:
        import torchvision.transforms

        yield torchvision.transforms
    finally:
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]


def imagenet_categories(cache: Path) -> list[str]:
    """The 1000 ImageNet class names in class order, as torchvision's weights carry them."""
    source = (torchvision_sources(cache) / "torchvision" / "models" / "_meta.py").read_text(encoding="utf-8")
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "_IMAGENET_CATEGORIES":
            return list(ast.literal_eval(node.value))
    raise LookupError("torchvision's _meta.py has no _IMAGENET_CATEGORIES")
