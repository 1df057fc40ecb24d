"""`edgepack-runtime`: inspect, run and verify a bundle on the device."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

import click
import numpy as np
from rich.markup import escape
from rich.table import Table

from .backends import backend_available
from .bundle import open_bundle
from .errors import BackendUnavailableError, EdgepackError, InputError
from .model import choose_artifact, load
from .parity import self_test
from .report import artifacts_table, make_console

console = make_console()


def fail(message: str) -> NoReturn:
    """Print one line on stderr and exit non-zero: the only way errors leave the CLI."""
    make_console(stderr=True).print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    sys.exit(1)


class ErrorLineGroup(click.Group):
    """Turn every EdgepackError into one line and exit code 1, never a traceback.
    The packager's CLI uses it too."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except EdgepackError as exc:
            self.report(exc)
            fail(str(exc))

    def report(self, exc: EdgepackError) -> None:
        """Print what belongs with the error line (subclasses: e.g. a build's table)."""


@click.group(cls=ErrorLineGroup)
@click.version_option(package_name="edgepack-runtime")
def main():
    """Run edgepack bundles on this device."""


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path))
def info(bundle: Path):
    """Show a bundle's target, tensors, artifacts and which one runs by default."""
    b = open_bundle(bundle)
    m = b.manifest
    console.print(f"[bold]{m.name}[/]  target {m.target.get('id')}  created {m.created}  schema {m.schema_version}")
    for label, specs in (("inputs", m.inputs), ("outputs", m.outputs)):
        console.print(f"{label}: " + ", ".join(s.describe() for s in specs))
    console.print(artifacts_table(m))
    try:
        console.print(f"default artifact here: [bold]{choose_artifact(b).name}[/]")
    except EdgepackError as exc:
        console.print(f"default artifact here: none ({exc})")
    console.print("toolchain: " + ", ".join(f"{k} {v}" for k, v in m.toolchain.items()))


def _parse_inputs(pairs: tuple[str, ...]) -> dict[str, np.ndarray]:
    feeds = {}
    for pair in pairs:
        name, sep, file = pair.partition("=")
        if not sep or not name or not file:
            raise InputError(f"--input {pair!r} must look like NAME=FILE.npy, e.g. --input image=x.npy")
        try:
            feeds[name] = np.load(file, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read --input {name}={file} ({exc}); pass a .npy file written by np.save") from None
    return feeds


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--input", "inputs", multiple=True, metavar="NAME=FILE.npy", help="One per model input.")
@click.option("--artifact", default=None, help="Artifact name (default: the bundle's preferred one).")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Default: the target's.")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None, help="Write outputs to this .npz.")
def run(bundle: Path, inputs, artifact, threads, output):
    """Run one inference on .npy inputs."""
    model = load(bundle, artifact=artifact, threads=threads)
    outputs = model.run(_parse_inputs(inputs))
    if output:
        np.savez(output, **outputs)
        console.print(f"wrote {', '.join(outputs)} to {output} ({model.artifact.name})")
        return
    for name, value in outputs.items():
        console.print(f"[bold]{name}[/] {list(value.shape)} {value.dtype} ({model.artifact.name})")
        console.print(np.array2string(value, precision=4, threshold=64), highlight=False)


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--artifact", default=None, help="Check only this artifact.")
def verify(bundle: Path, artifact):
    """Check every file's sha256 and run each artifact's golden self-test."""
    b = open_bundle(bundle)
    b.verify_integrity()
    console.print(f"integrity: all {1 + sum(a.status == 'ok' for a in b.manifest.artifacts)} files match their sha256")
    chosen = [b.manifest.artifact(artifact)] if artifact else list(b.manifest.artifacts)
    table = Table(title=f"self-test {b.manifest.name}")
    for column in ("artifact", "result", "max |diff| vs PyTorch", "tolerance", "samples"):
        table.add_column(column)
    tested = failed = 0
    for art in chosen:
        if art.status != "ok":
            table.add_row(art.name, "[yellow]not built[/]", "-", "-", "-")
            continue
        if not backend_available(art.format):
            table.add_row(art.name, f"[yellow]skipped: no {art.format} backend installed[/]", "-", "-", "-")
            continue
        try:
            model = load(b.root, artifact=art.name)
        except BackendUnavailableError as exc:  # installed but unusable, e.g. tflite-runtime with numpy 2
            table.add_row(art.name, f"[yellow]skipped: {escape(str(exc))}[/]", "-", "-", "-")
            continue
        result = self_test(model)
        tested += 1
        failed += not result.passed
        verdict = "[green]passed[/]" if result.passed else "[red]FAILED[/]"
        table.add_row(art.name, verdict, f"{result.max_abs_diff:.3e}", f"{result.tolerance:.1e}", str(result.samples))
    console.print(table)
    if failed:
        fail(f"{failed} artifact(s) differ from PyTorch beyond their tolerance on this device; "
             "do not deploy them, rebuild or report the difference")
    if not tested:
        fail("no artifact could be tested here; install a backend, e.g. pip install 'edgepack-runtime[onnx]'")
