"""How often a build's 95 % intervals hold the truth, measured on real outputs (not a test).

Runs each shipped artifact of BUNDLE and PyTorch on a pool of samples (one or more .npz
files with `groups`: the photo each view comes from), takes the artifact's figure on the
whole pool as the truth, then draws many small sets of whole groups from the pool, as a
user's eval set would be, and counts how often each set's interval contains the truth:

- `groups`: the intervals the build prints (edgepack_runtime.intervals: the groups are the unit);
- `samples`: the same figures with every sample counted as independent (the old intervals).

    python benchmarks/interval_coverage.py BUNDLE MODEL --weights W --data eval.npz unseen.npz --groups 5
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import edgepack_runtime
from edgepack.budget import DEFAULT_MIN_F1
from edgepack.model_source import load_model
from edgepack.samples import load_samples
from edgepack.validate import torch_outputs
from edgepack_runtime.intervals import group_index
from edgepack_runtime.parity import run_samples
from edgepack_runtime.task_fidelity import Floors, headline
from edgepack_runtime.tasks import task

DRAWS = 400
SEED = 1


def pool(paths: list[Path], specs) -> tuple[dict, np.ndarray]:
    inputs, groups, offset = {}, [], 0
    for path in paths:
        part, _, ids = load_samples(path, specs, evaluation=True)
        for k, v in part.items():
            inputs.setdefault(k, []).append(v)
        count = len(next(iter(part.values())))
        index = group_index(ids, count)
        groups.append(index + offset)
        offset += int(index.max()) + 1
    return {k: np.concatenate(v) for k, v in inputs.items()}, np.concatenate(groups)


def coverage(bundle: Path, model: str, weights, data: list[Path], groups_per_set: int) -> list[dict]:
    manifest = edgepack_runtime.open_bundle(bundle).manifest
    module = load_model(model, weights=weights).module
    inputs, groups = pool(data, manifest.inputs)
    _, reference = torch_outputs(module, manifest.inputs, inputs)
    post = manifest.postprocessing
    floors = Floors(manifest.min_cosine, manifest.min_agreement, DEFAULT_MIN_F1)
    judged = task(manifest.task or "generic")
    figure = lambda out, ref, ids: headline(judged.metrics(out, ref, floors, post, ids))  # noqa: E731
    rng = np.random.default_rng(SEED)
    units = np.unique(groups)
    rows = []
    for art in manifest.artifacts:
        if art.status != "ok":
            continue
        with edgepack_runtime.load(bundle, artifact=art.name) as runner:
            outputs = run_samples(runner.run, inputs)
        truth = figure(outputs, reference, groups).value
        held = {"groups": 0, "samples": 0}
        for _ in range(DRAWS):
            pick = np.flatnonzero(np.isin(groups, rng.choice(units, groups_per_set, replace=False)))
            out, ref = {k: v[pick] for k, v in outputs.items()}, {k: v[pick] for k, v in reference.items()}
            for label, ids in (("groups", groups[pick]), ("samples", None)):
                m = figure(out, ref, ids)
                held[label] += m.low <= truth <= m.high
        rows.append({"artifact": art.name, "truth": round(truth, 4), "pool_groups": len(units),
                     "pool_samples": len(groups), "groups_per_set": groups_per_set, "draws": DRAWS,
                     **{f"coverage_{k}": round(v / DRAWS, 3) for k, v in held.items()}})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("model")
    parser.add_argument("--weights", type=Path)
    parser.add_argument("--data", type=Path, nargs="+", required=True)
    parser.add_argument("--groups", type=int, default=5, help="groups (photos) per drawn set")
    args = parser.parse_args()
    for row in coverage(args.bundle, args.model, args.weights, args.data, args.groups):
        print(json.dumps(row))


if __name__ == "__main__":
    main()
