"""`-o` never deletes the user's files, and the destination holds a complete bundle at every instant."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import edgepack_runtime
from edgepack.bundle_writer import BundleStaging
from edgepack.errors import BuildError


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_web_app_folder_with_a_manifest_json_is_not_a_bundle(tmp_path):
    app = tmp_path / "app"
    (app / "src").mkdir(parents=True)
    (app / "manifest.json").write_text('{"name": "my pwa", "start_url": "/"}')
    (app / "index.html").write_text("<html></html>")
    (app / "src" / "main.js").write_text("console.log(1)")
    before = _tree(app)
    with pytest.raises(BuildError, match="is not an edgepack bundle .*refusing to replace it"):
        BundleStaging(app)
    assert _tree(app) == before


def test_a_bundle_with_files_it_does_not_list_is_not_replaced(bundle_copy):
    (bundle_copy / "notes.txt").write_text("my notes")
    before = _tree(bundle_copy)
    with pytest.raises(BuildError, match=r"also holds files it does not list \(notes.txt\)"):
        BundleStaging(bundle_copy)
    assert _tree(bundle_copy) == before


def test_a_bundle_with_labels_and_a_signature_can_be_replaced(digits_raw_bundle, tmp_path):
    """Its labels.txt (a file the manifest lists as postprocessing) and bundle.sig are its own."""
    dest = Path(shutil.copytree(digits_raw_bundle, tmp_path / "raw"))
    assert (dest / "labels.txt").is_file()
    (dest / "bundle.sig").write_text("{}")
    with BundleStaging(dest) as staging:
        _stage_copy(staging, digits_raw_bundle)
        staging.commit()
    assert not (dest / "bundle.sig").exists() and (dest / "labels.txt").is_file()


def test_a_file_in_the_way_is_one_clear_error(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(BuildError, match="exists and is not a directory"):
        BundleStaging(tmp_path / "f")
    assert (tmp_path / "f").read_text() == "x"


def _stage_copy(staging: BundleStaging, source: Path) -> None:
    for path in source.iterdir():
        shutil.copy2(path, staging.dir / path.name)


def test_replacing_a_bundle_swaps_it_whole_and_leaves_nothing_behind(digits_bundle, tmp_path):
    dest = tmp_path / "b"
    shutil.copytree(digits_bundle, dest)
    (dest / "golden.npz").write_bytes(b"old")  # mark the old bundle
    with BundleStaging(dest) as staging:
        _stage_copy(staging, digits_bundle)
        staging.commit()
    edgepack_runtime.open_bundle(dest).verify_integrity()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


KILL_AFTER_SWAP = textwrap.dedent("""
    import os, shutil, signal, sys
    from pathlib import Path
    import edgepack.bundle_writer as writer

    real = writer._exchange
    def exchange_then_die(a, b):
        swapped = real(a, b)
        os.kill(os.getpid(), signal.SIGKILL)  # the commit window: swapped, old one not yet removed
        return swapped
    writer._exchange = exchange_then_die
    with writer.BundleStaging(Path(sys.argv[1])) as staging:
        for path in Path(sys.argv[2]).iterdir():
            shutil.copy2(path, staging.dir / path.name)
        staging.commit()
""")


def test_a_kill_in_the_commit_window_leaves_a_complete_bundle_and_the_next_build_sweeps(digits_bundle, tmp_path):
    dest = tmp_path / "b"
    shutil.copytree(digits_bundle, dest)
    proc = subprocess.run([sys.executable, "-c", KILL_AFTER_SWAP, str(dest), str(digits_bundle)])
    assert proc.returncode == -9
    edgepack_runtime.open_bundle(dest).verify_integrity()  # complete: the new one
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "b"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".b.partial-")  # the old bundle, orphaned
    with BundleStaging(dest):
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".b.partial-")) != leftovers


def test_stale_staging_of_dead_builds_is_swept_but_a_live_builds_is_kept(tmp_path):
    dead = tmp_path / ".b.partial-999999999-abc"
    live = tmp_path / f".b.partial-{os.getpid()}-xyz"
    other = tmp_path / ".c.partial-999999999-abc"  # another destination's: not ours to touch
    for d in (dead, live, other):
        d.mkdir()
    with BundleStaging(tmp_path / "b"):
        assert not dead.exists() and live.exists() and other.exists()
