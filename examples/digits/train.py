"""Train the digits CNN on scikit-learn's UCI handwritten digits (real data, offline).

Writes to OUT_DIR (default examples/digits/artifacts):
  weights.safetensors   trained weights for `create()`
  calib.npz             {"image": [200, 1, 8, 8]} training samples for int8 calibration
  eval.npz              {"image": [360, 1, 8, 8], "labels": [360]} held-out test set

Usage: python examples/digits/train.py [OUT_DIR] [--epochs N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model import create  # noqa: E402

SEED = 0
PIXEL_MAX = 16.0  # the UCI digits are 4-bit grey levels, 0..16
EVAL_FRACTION = 0.2
CALIBRATION_SAMPLES = 200
BATCH = 64


def load_data():
    digits = load_digits()
    images = (digits.images / PIXEL_MAX).astype(np.float32)[:, None, :, :]  # [N, 1, 8, 8]
    return train_test_split(images, digits.target.astype(np.int64), test_size=EVAL_FRACTION,
                            random_state=SEED, stratify=digits.target)


def train(out_dir: Path, epochs: int = 15) -> float:
    """Train, write the three files, return the test accuracy in percent."""
    torch.manual_seed(SEED)
    x_train, x_test, y_train, y_test = load_data()
    model = create()
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    generator = torch.Generator().manual_seed(SEED)
    for _ in range(epochs):
        model.train()
        for batch in torch.randperm(len(xt), generator=generator).split(BATCH):
            optimiser.zero_grad()
            loss_fn(model(xt[batch]), yt[batch]).backward()
            optimiser.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(torch.from_numpy(x_test)).argmax(1).numpy() == y_test).mean() * 100)

    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(model.state_dict(), str(out_dir / "weights.safetensors"))
    np.savez(out_dir / "calib.npz", image=x_train[:CALIBRATION_SAMPLES])
    np.savez(out_dir / "eval.npz", image=x_test, labels=y_test)
    return accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", type=Path, default=Path(__file__).resolve().parent / "artifacts")
    parser.add_argument("--epochs", type=int, default=15)
    args = parser.parse_args()
    start = time.perf_counter()
    accuracy = train(args.out_dir, args.epochs)
    print(f"trained digits CNN: test top-1 {accuracy:.2f}% in {time.perf_counter() - start:.1f} s -> {args.out_dir}")


if __name__ == "__main__":
    main()
