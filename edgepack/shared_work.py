"""What the targets of one multi-target build share (`edgepack build --target A --target B`).

The model is loaded and PyTorch's references are computed once. A format's fp32 export is
made once per export key (`ExportFormat.export_key`: ONNX's opset, TFLite's layout), and a
quantization search once per set of inputs that decide it: the export, the precision, the
target's recipes, whether this host runs the target's kernels (which decides whether speed
counts) and the layout. Two profiles that differ only in what they say about the device
(a Raspberry Pi 5 and a 4B: the same presets, other ISA notes) share every artifact.
The float export's check against PyTorch is shared where the export, the layout and the
threads agree (whether this host runs the target's kernels only labels its figures), and
a target whose artifacts are among an earlier target's, at the same threads, takes that
target's timing run. Everything else (the manifest, the bundle) is each target's own.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Hashable, Optional, TypeVar

from .errors import BuildError
from .formats import artifact_files

if TYPE_CHECKING:  # pipeline imports this module
    from .pipeline import BuildContext

__all__ = ["SharedWork", "bundle_folder"]

T = TypeVar("T")


def bundle_folder(target: str) -> str:
    """The folder of a target's bundle inside a multi-target build's -o: `raspberry-pi/5`
    writes `raspberry-pi-5/`."""
    return target.replace("/", "-")


class SharedWork:
    """Results of work the targets have in common, with the files they wrote."""

    def __init__(self) -> None:
        # The first target's BuildContext once it has loaded and referenced the model.
        self.first: Optional[BuildContext] = None
        self._scratch = tempfile.TemporaryDirectory(prefix="edgepack-shared-")  # removed with the build
        self._results: dict[Hashable, object] = {}  # by key: a value, or the BuildError making it raised

    def result(self, key: Hashable, make: Callable[[], T]) -> T:
        """`make()`'s result, made the first time `key` is asked for (work that writes no
        files, such as checking an export every target shares). A BuildError is remembered too."""
        if key in self._results:
            value = self._results[key]
            if isinstance(value, BuildError):
                raise BuildError(str(value))
            return value  # type: ignore[return-value]
        try:
            self._results[key] = made = make()
        except BuildError as exc:
            self._results[key] = exc
            raise
        return made

    def covering(self, kind: Hashable, wanted: frozenset, make: Callable[[], T]) -> T:
        """`make()`'s result for the items `wanted`, or the result of an earlier call of the
        same `kind` whose items included them all (a run that measured more than asked)."""
        for key in self._results:
            if isinstance(key, tuple) and len(key) == 3 and key[:2] == ("covering", kind) and wanted <= key[2]:
                return self.result(key, make)
        return self.result(("covering", kind, wanted), make)

    def reuse(self, key: Hashable, fmt, file: Path, make: Callable[[], T]) -> T:
        """`make()`'s result, which writes the artifact `file` of format `fmt` (with its
        companions): made the first time `key` is asked for, copied to `file`'s folder
        after that. A BuildError is remembered too: the next target fails the same way."""
        made_here = key not in self._results

        def make_and_keep() -> tuple[T, list[Path]]:
            value = make()
            folder = Path(self._scratch.name) / str(len(self._results))
            folder.mkdir()
            return value, [Path(shutil.copy2(path, folder / path.name)) for path in artifact_files(fmt, file)]

        value, stored = self.result(key, make_and_keep)
        if not made_here:
            for path in stored:
                shutil.copy2(path, file.parent / path.name)
        return value
