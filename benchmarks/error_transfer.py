"""Which per-sample error, measured on the samples that choose, predicts agreement on unseen ones.

Quantizes a classifier with each of the host profile's int8 recipes and a few float-island
variants of its preset (ONNX and TFLite), then measures every candidate twice: on the
calibration samples (what a plain build judges) and on unseen ones. For each error it
prints the Spearman correlation between that error on the calibration samples and the
candidate's top-1 agreement with PyTorch on the unseen samples (1.0: the error ranks the
candidates exactly as the unseen photos do). Not a test: a measurement behind the choice
of `edgepack/closeness.py`.

    python benchmarks/error_transfer.py examples/mobilenet_v2/model.py:create \\
        --weights A/mobilenet_v2-b0353104.pth --calibration A/calib.npz --unseen A/unseen.npz
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from edgepack.formats import QuantPlan, get_format
from edgepack.islands import Islands
from edgepack.model_source import load_model
from edgepack.samples import load_samples
from edgepack.targets import load_target
from edgepack.validate import torch_outputs
from edgepack_runtime.backends import open_session
from edgepack_runtime.parity import run_samples
from edgepack_runtime.precision import precision

VARIANTS = (Islands(prefix=0.05), Islands(prefix=0.1))  # over the preset, as the search's walks
RANKED = (1, 2, 4)  # the preset with its most sensitive layers float


def errors(out: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    n = len(ref)
    out, ref = out.reshape(n, -1).astype(np.float64), ref.reshape(n, -1).astype(np.float64)
    spread = ref.std(axis=1)
    top = ref.argmax(axis=1)

    def margin(x):
        others = x.copy()
        np.put_along_axis(others, top[:, None], -np.inf, axis=1)
        return np.take_along_axis(x, top[:, None], axis=1)[:, 0] - others.max(axis=1)

    cosine = (out * ref).sum(1) / np.linalg.norm(out, axis=1) / np.linalg.norm(ref, axis=1)
    return {"agreement": float((out.argmax(1) == top).mean() * 100),
            "margin shift": float((np.abs(margin(out) - margin(ref)) / spread).mean()),
            "1 - cosine": float((1 - cosine).mean()),
            "logit rms / spread": float((np.sqrt(((out - ref) ** 2).mean(1)) / spread).mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--weights", type=Path)
    parser.add_argument("--calibration", type=Path, required=True)
    parser.add_argument("--unseen", type=Path, required=True)
    parser.add_argument("--formats", default="onnx,tflite")
    args = parser.parse_args()

    loaded = load_model(args.model, weights=args.weights)
    specs, target = loaded.inputs, load_target("host")
    calibration = load_samples(args.calibration, specs)[0]
    unseen = load_samples(args.unseen, specs, evaluation=True)[0]
    out_specs, ref_c = torch_outputs(loaded.module, specs, calibration)
    _, ref_u = torch_outputs(loaded.module, specs, unseen)
    name = out_specs[0].name
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgepack-transfer-") as tmp:
        for fmt_name in args.formats.split(","):
            fmt = get_format(fmt_name)
            fp32 = Path(tmp) / f"{fmt_name}.fp32{fmt.suffix}"
            int8 = precision("int8")
            exported = fmt.export(loaded.module, specs, [s.name for s in out_specs], target, fp32)
            preset, *others = fmt.recipes(target, int8)
            first = Path(tmp) / f"{fmt_name}.preset{fmt.suffix}"
            fmt.quantize(exported, first, target, QuantPlan(int8, preset), calibration)
            ranked = [tuple(group) for group in fmt.sensitive_layers(fp32, first, calibration, target)]
            islands = [*VARIANTS, *(Islands(ranked=tuple(ranked[:k])) for k in RANKED if k <= len(ranked))]
            plans = [QuantPlan(int8, recipe) for recipe in (preset, *others)] + [
                QuantPlan(int8, preset, i.ops(exported.graph)) for i in islands]
            for i, plan in enumerate(plans):
                path = Path(tmp) / f"{fmt_name}.{i}{fmt.suffix}"
                fmt.quantize(exported, path, target, plan, calibration)
                session = open_session(fmt_name, path, 2, specs, out_specs, fmt.layout(target))
                on_c = errors(run_samples(session.run, calibration)[name], ref_c[name])
                on_u = errors(run_samples(session.run, unseen)[name], ref_u[name])
                rows.append((f"{fmt_name} {i}", on_c, on_u))
                print(f"{fmt_name} {i}: calibration {on_c} | unseen agreement {on_u['agreement']:.1f}", flush=True)
    truth = [u["agreement"] for _, _, u in rows]
    print(f"\n{len(rows)} candidates; Spearman vs agreement on unseen samples (higher is better):")
    for key in rows[0][1]:
        sign = 1 if key == "agreement" else -1  # a lower error should mean a higher agreement
        print(f"  {key:20s} {spearmanr([sign * c[key] for _, c, _ in rows], truth)[0]:+.2f}")


if __name__ == "__main__":
    main()
