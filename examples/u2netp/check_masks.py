"""What PyTorch's U^2-Net-p makes of the prepared photos, before any export: the fraction of
each view's pixels the mask keeps (saliency >= 0.5), per photo, and the fp32 latency.

    python examples/u2netp/check_masks.py [ARTIFACTS] [--overlay out.png] [--threads 2]

A mask covering a sensible, non-empty part of most views (and nearly nothing on the
texture-only photos) says the weights and the preprocessing are right; random weights
or a wrong normalisation give empty or all-covering masks everywhere.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from model import INPUT_SHAPE, MASK_THRESHOLD, MEAN, STD, create  # noqa: E402
from prepare import CALIBRATION_PHOTOS, EVAL_PHOTOS, UNSEEN_PHOTOS, WEIGHTS_FILE  # noqa: E402

SETS = (("calib", CALIBRATION_PHOTOS), ("eval", EVAL_PHOTOS), ("unseen", UNSEEN_PHOTOS))
TIMED_RUNS = 10


def masks(model: torch.nn.Module, images: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return np.concatenate([model(torch.from_numpy(images[i:i + 1])).numpy() for i in range(len(images))])


def overlay(images: np.ndarray, maps: np.ndarray, path: Path, count: int = 8) -> None:
    """The first view of up to `count` photos, salient pixels tinted red, the rest darkened."""
    from PIL import Image

    tiles = []
    for image, saliency in zip(images[:count], maps[:count], strict=True):
        rgb = np.clip((image.transpose(1, 2, 0) * STD + MEAN) * 255, 0, 255)
        keep = saliency[0] >= MASK_THRESHOLD
        tinted = np.where(keep[..., None], rgb * 0.6 + np.array([255, 0, 0]) * 0.4, rgb * 0.3)
        tiles.append(np.concatenate([rgb, tinted], 1))
    Image.fromarray(np.concatenate(tiles, 0).astype(np.uint8)).resize((320, 160 * len(tiles))).save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("artifacts", nargs="?", type=Path, default=HERE / "artifacts")
    parser.add_argument("--overlay", type=Path, help="write a PNG of the eval photos' first views and masks")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = create()
    model.load_state_dict(torch.load(args.artifacts / WEIGHTS_FILE, map_location="cpu", weights_only=True))
    print(f"parameters: {sum(p.numel() for p in model.parameters()):,}")
    for role, photos in SETS:
        with np.load(args.artifacts / f"{role}.npz") as data:
            images, groups = data["image"], data["groups"]
        maps = masks(model, images)
        fractions = (maps >= MASK_THRESHOLD).mean(axis=(1, 2, 3))
        print(f"{role}: {len(images)} views of {len(photos)} photos; mask fraction median "
              f"{np.median(fractions):.3f}, views with 1-95 % of pixels: "
              f"{np.mean((fractions > 0.01) & (fractions < 0.95)):.0%}")
        for group, (_, relative) in enumerate(photos):
            mine = fractions[groups == group]
            print(f"  {Path(relative).name:22s} " + " ".join(f"{f:.3f}" for f in mine))
        if args.overlay and role == "eval":
            first = np.array([np.flatnonzero(groups == g)[0] for g in range(len(photos))])
            overlay(images[first], maps[first], args.overlay)
    example = torch.zeros(INPUT_SHAPE)
    with torch.no_grad():
        model(example)  # warm-up
        times = []
        for _ in range(TIMED_RUNS):
            start = time.perf_counter()
            model(example)
            times.append(time.perf_counter() - start)
    print(f"PyTorch fp32 eager, {args.threads} threads, batch 1: median {statistics.median(times) * 1e3:.0f} ms "
          f"(min {min(times) * 1e3:.0f}) over {TIMED_RUNS} runs")


if __name__ == "__main__":
    main()
