"""The packager's adversarial long tail (issue 21): a symlinked or hostile -o, a full disk in
any stage, a model whose output shape depends on its input. One line each, nothing lost,
no staging directory left behind."""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import edgepack
import edgepack_runtime
from edgepack.cli import main as packager_cli
from edgepack_runtime.errors import OutputShapeError, PathError
from edgepack_runtime.files import NAME_MAX

ONNX_FP32 = {"formats": ["onnx"], "precisions": ["fp32"]}

DATA_DEPENDENT = '''
import torch

class Positives(torch.nn.Module):
    def forward(self, x):
        return x[x > 0]  # as many values as the input has positive ones

def create():
    return Positives()

def example_inputs():
    return {"x": torch.ones(1, 4)}
'''


def _build(tiny_model, out: Path):
    return edgepack.build(f"{tiny_model}:create", out, "host", calibration=tiny_model.parent / "calib.npz",
                          **ONNX_FP32)


def _cli_build(tiny_model, out: Path):
    result = CliRunner().invoke(packager_cli, ["build", f"{tiny_model}:create", "-o", str(out), "--formats", "onnx",
                                               "--precisions", "fp32", "--calibration",
                                               str(tiny_model.parent / "calib.npz")])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def _partials(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if ".partial-" in p.name or ".old-" in p.name]


def test_a_symlinked_output_to_a_bundle_is_replaced_where_it_points_and_the_link_survives(tiny_model, tmp_path):
    real = _build(tiny_model, tmp_path / "real").path
    link = tmp_path / "link"
    os.symlink("real", link)
    before = (real / "manifest.json").read_bytes()
    result = _build(tiny_model, link)
    assert link.is_symlink() and os.readlink(link) == "real"
    assert result.path == link
    assert (real / "manifest.json").read_bytes() != before  # rebuilt (a new created time), in place
    edgepack_runtime.open_bundle(link).verify_integrity()
    assert _partials(tmp_path) == []


def test_a_symlink_loop_or_an_overlong_output_is_one_line(tiny_model, tmp_path):
    os.symlink("loop", tmp_path / "loop")
    result = _cli_build(tiny_model, tmp_path / "loop")
    assert result.exit_code == 1 and "symbolic link loop" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert os.readlink(tmp_path / "loop") == "loop"  # the link is kept
    with pytest.raises(PathError, match="too long"):
        _build(tiny_model, tmp_path / ("b" * (NAME_MAX + 1)))


def test_a_long_output_name_still_fits_its_staging_directory(tiny_model, tmp_path):
    out = tmp_path / ("b" * (NAME_MAX - 5))  # valid, but ".NAME.partial-PID-XXXX" would not be
    _build(tiny_model, out)
    _build(tiny_model, out)  # replacing it stages beside it too
    edgepack_runtime.open_bundle(out).verify_integrity()
    assert _partials(tmp_path) == []


@contextmanager
def _tmpfs(where: Path, size: str):
    """A real small filesystem, or a skip where mounting is not allowed (needs root)."""
    where.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or proc.returncode}): needs root")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


def _fill(disk: Path, leave_pages: int) -> None:
    """Fill `disk` but for `leave_pages` 4 KiB pages."""
    with open(disk / "filler", "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError:
            pass
    with open(disk / "filler", "r+b") as fh:
        fh.truncate(max(0, os.path.getsize(disk / "filler") - leave_pages * 4096))


@pytest.mark.parametrize("free_pages", [0, 1, 2, 3, 5, 8])
def test_a_full_disk_in_any_stage_is_one_line_and_the_old_bundle_still_verifies(tiny_model, tmp_path, free_pages):
    with _tmpfs(tmp_path / "disk", "1m") as disk:
        out = disk / "bundle"
        _build(tiny_model, out)
        old = (out / "manifest.json").read_bytes()
        _fill(disk, free_pages)
        result = _cli_build(tiny_model, out)
        if result.exit_code == 0:  # enough room after all: a complete new bundle
            edgepack_runtime.open_bundle(out).verify_integrity()
            return
        assert result.exit_code == 1 and "the disk is full" in result.stderr, result.output
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert (out / "manifest.json").read_bytes() == old
        edgepack_runtime.open_bundle(out).verify_integrity()
        assert _partials(disk) == []
        (disk / "filler").unlink()
        _build(tiny_model, out)  # space again: the next build goes through and leaves nothing behind
        assert _partials(disk) == []


def test_staging_left_by_a_killed_build_is_swept_by_the_next(tiny_model, tmp_path):
    out = tmp_path / "b"
    stale = tmp_path / ".b.partial-999999999-abcd"  # no process has that pid
    stale.mkdir()
    (stale / "model.onnx").write_bytes(b"half")
    _build(tiny_model, out)
    assert _partials(tmp_path) == []


def test_an_output_whose_shape_depends_on_the_data_is_refused_in_one_line(tmp_path):
    model = tmp_path / "positives.py"
    model.write_text(DATA_DEPENDENT)
    x = np.ones((10, 1, 4), np.float32)
    x[2, 0, :2] = -1  # sample 3 has two positive values, the others four
    np.savez(tmp_path / "calib.npz", x=x)
    with pytest.raises(OutputShapeError, match=r"output 'output' changes shape with the input data \(\[4\] for "
                                               r"sample 1, \[2\] for sample 3\)"):
        edgepack.build(f"{model}:create", tmp_path / "b", "host", calibration=tmp_path / "calib.npz", **ONNX_FP32)
    proc = subprocess.run([Path(sys.executable).parent / "edgepack", "build", f"{model}:create", "-o", tmp_path / "b",
                           "--formats", "onnx", "--precisions", "fp32", "--calibration", tmp_path / "calib.npz"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "data-dependent shape" in errors[0], proc.stderr
    assert not (tmp_path / "b").exists() and _partials(tmp_path) == []
