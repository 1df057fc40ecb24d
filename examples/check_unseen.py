"""What a bundle's artifacts give on samples the build never saw, next to what it claimed.

For every shipped artifact: the task's headline figure as the build printed it (from the
confirmation samples, with its 95 % interval), and the same figure measured here against
PyTorch on DATA (an .npz like --eval, optional `groups`), which neither calibration nor
the search saw. A claim holds when the unseen figure is at or above the low end of the
claimed interval (within HOLD_TOLERANCE: 0.01 F1 or cosine, 1 point of agreement).

    python examples/check_unseen.py BUNDLE MODEL [--weights W] --data unseen.npz [--json]

MODEL is what `edgepack build` took (FILE.py:FACTORY or a checkpoint). Exits 1 when a
shipped artifact's claim does not hold or it falls below its floor on the unseen data.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import edgepack_runtime
from edgepack.budget import DEFAULT_MIN_F1
from edgepack.model_source import load_model
from edgepack.samples import load_samples
from edgepack.validate import torch_outputs
from edgepack_runtime.parity import run_samples
from edgepack_runtime.task_fidelity import Floors, headline
from edgepack_runtime.tasks import task

HOLD_TOLERANCE = {"top1_agreement": 1.0}  # percent; every other figure: 0.01
DEFAULT_TOLERANCE = 0.01


def check(bundle: Path, model: str, weights, data: Path, trust_checkpoint: bool = False) -> list[dict]:
    manifest = edgepack_runtime.open_bundle(bundle).manifest
    loaded = load_model(model, weights=weights, trust_checkpoint=trust_checkpoint)
    inputs, _, groups = load_samples(data, manifest.inputs, evaluation=True)
    _, reference = torch_outputs(loaded.module, manifest.inputs, inputs)
    post = manifest.postprocessing
    floors = Floors(manifest.min_cosine, manifest.min_agreement, DEFAULT_MIN_F1)
    rows = []
    for art in manifest.artifacts:
        if art.status != "ok":
            continue
        with edgepack_runtime.load(bundle, artifact=art.name) as runner:
            outputs = run_samples(runner.run, inputs)
        unseen = headline(task(manifest.task or "generic").metrics(outputs, reference, floors, post, groups))
        claimed = headline(art.accuracy.metrics) if art.accuracy is not None else None
        tolerance = HOLD_TOLERANCE.get(unseen.name, DEFAULT_TOLERANCE)
        rows.append({
            "artifact": art.name, "metric": unseen.name,
            "claimed": claimed.value if claimed else None, "claimed_low": claimed.low if claimed else None,
            "claimed_high": claimed.high if claimed else None, "claimed_samples": claimed.samples if claimed else None,
            "claimed_groups": claimed.groups if claimed else None,
            "claimed_on": (art.accuracy.split or "all") if art.accuracy else None,
            "unseen": unseen.value, "unseen_low": unseen.low, "unseen_high": unseen.high,
            "unseen_samples": unseen.samples, "unseen_groups": unseen.groups, "floor": unseen.floor,
            "holds": claimed is None or unseen.value >= claimed.low - tolerance,
            "clears_floor": unseen.floor is None or unseen.value >= unseen.floor,
        })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("model")
    parser.add_argument("--weights", type=Path)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--trust-checkpoint", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = check(args.bundle, args.model, args.weights, args.data, args.trust_checkpoint)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"{'artifact':14s} {'metric':15s} {'claimed (95 %)':34s} {'unseen':22s} holds  ≥ floor")
        for r in rows:
            claimed = (f"{r['claimed']:.3f} [{r['claimed_low']:.3f}–{r['claimed_high']:.3f}] "
                       f"n={r['claimed_samples']}/{r['claimed_groups']}g" if r["claimed"] is not None else "-")
            unseen = f"{r['unseen']:.3f} n={r['unseen_samples']}/{r['unseen_groups']}g"
            print(f"{r['artifact']:14s} {r['metric']:15s} {claimed:34s} {unseen:22s} "
                  f"{'yes' if r['holds'] else 'NO':6s} {'yes' if r['clears_floor'] else 'NO'}")
    sys.exit(0 if all(r["holds"] and r["clears_floor"] for r in rows) else 1)


if __name__ == "__main__":
    main()
