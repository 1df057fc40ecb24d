"""Photos in, labels out, against PyTorch: for each evaluation photo, the bundle's own
preprocessing (`--preprocess imagenet`) against torchvision's Resize(256), CenterCrop(224),
ToTensor(), Normalize() on the same file, and each artifact's top-5 labels
(`predict(photo)`) against PyTorch's on torchvision's tensor.

Usage: python examples/mobilenet_v2/check_photos.py BUNDLE   (after prepare.py)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import edgepack_runtime

HERE = Path(__file__).resolve().parent
ARTIFACTS = HERE / "artifacts"
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from model import create  # noqa: E402
from prepare import MEAN, STD, WEIGHTS_FILE  # noqa: E402
from torchvision_reference import torchvision_transforms  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path)
    bundle = parser.parse_args().bundle
    module = create().eval()
    module.load_state_dict(torch.load(ARTIFACTS / WEIGHTS_FILE, weights_only=True))
    names = (ARTIFACTS / "labels.txt").read_text(encoding="utf-8").splitlines()
    photos = sorted((ARTIFACTS / "photos").iterdir())
    expected, reference = {}, {}
    with torchvision_transforms(ARTIFACTS) as T:
        transform = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                               T.Normalize(MEAN.tolist(), STD.tolist())])
        for photo in photos:
            with Image.open(photo) as image:
                expected[photo] = transform(image.convert("RGB"))[None]
    for photo in photos:
        with torch.no_grad():
            reference[photo] = [names[i] for i in module(expected[photo])[0].topk(5).indices]
    manifest = edgepack_runtime.open_bundle(bundle).manifest
    print(f"{len(photos)} photos; PyTorch's top-1: " + ", ".join(f"{p.stem} {reference[p][0]!r}" for p in photos))
    for art in manifest.artifacts:
        if art.status != "ok":
            continue
        with edgepack_runtime.load(bundle, artifact=art.name) as model:
            diff = max(float(np.abs(model.preprocess(p)["image"] - expected[p].numpy()).max()) for p in photos)
            top5 = {p: [label for label, _ in model.predict(p).top] for p in photos}
        same_list = sum(top5[p] == reference[p] for p in photos)
        same_set = sum(set(top5[p]) == set(reference[p]) for p in photos)
        same_top1 = sum(top5[p][0] == reference[p][0] for p in photos)
        print(f"{art.name:20s} tensor max |diff| vs torchvision {diff:.1e}; top-5 same list {same_list}/{len(photos)}, "
              f"same set {same_set}/{len(photos)}, top-1 {same_top1}/{len(photos)}")


if __name__ == "__main__":
    main()
