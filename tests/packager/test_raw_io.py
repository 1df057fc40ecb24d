"""Declaring raw inputs at build time (issue #13): the spec forms agree, and every misfit
between the declaration and the model's tensors is one clear error before any conversion."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgepack.errors import ModelSourceError
from edgepack.raw_io import declare
from edgepack_runtime.manifest import ImageSteps, TensorSpec

IMAGE = (TensorSpec("image", (1, 3, 224, 224), "float32"),)
LOGITS = (TensorSpec("logits", (1, 10), "float32"),)
REFERENCE = {"logits": np.random.default_rng(0).standard_normal((4, 10)).astype(np.float32)}
EDGEPACK = Path(sys.executable).parent / "edgepack"


def _image(preprocess, inputs=IMAGE) -> ImageSteps:
    return declare(inputs, LOGITS, REFERENCE, preprocess=preprocess).preprocessing.image


def test_the_imagenet_preset_is_torchvisions_evaluation_transform(tmp_path):
    steps = _image("imagenet")
    assert ((steps.resize, steps.crop, steps.interpolation, steps.channels, steps.layout)
            == ((256,), (224, 224), "bilinear", "rgb", "nchw"))
    assert steps.mean == (0.485, 0.456, 0.406) and steps.std == (0.229, 0.224, 0.225) and steps.scale == 1 / 255
    spelled = _image("resize=256 crop=224 mean=0.485,0.456,0.406 std=0.229,0.224,0.225 scale=1/255")
    (tmp_path / "pre.toml").write_text('[image]\nresize = 256\ncrop = 224\nmean = [0.485, 0.456, 0.406]\n'
                                       'std = [0.229, 0.224, 0.225]\n')
    assert spelled == steps == _image(str(tmp_path / "pre.toml")) == _image({"preset": "imagenet"})
    cropped = _image("imagenet crop=192x192 resize=219", (TensorSpec("image", (1, 3, 192, 192), "float32"),))
    assert cropped.crop == (192, 192)
    nhwc = _image("unit", (TensorSpec("image", (1, 96, 96, 3), "float32"),))
    assert (nhwc.layout, nhwc.resize, nhwc.crop, nhwc.mean) == ("nhwc", (96, 96), (), ())


@pytest.mark.parametrize("spec, words", [
    ("imagenett", "did you mean 'imagenet'"),
    ("resize=256", "add crop=224x224"),
    ("resize=256 crop=200", "makes 200x200 images"),
    ("imagenet mean=0.5,0.5", "2 values for 3 channel"),
    ("imagenet std=1,0,1", "non-zero std"),
    ("imagenet interpolation=cubic", "did you mean 'bicubic'"),
    ("imagenet channels=gray", "1 channel"),
    ("imagenet crop_size=3", "unknown key 'crop_size'"),
    ("resize=a", "not a number list"),
])
def test_a_misfit_declaration_is_one_clear_error(spec, words):
    with pytest.raises(ModelSourceError, match=words):
        _image(spec)


def test_labels_must_match_the_classes_and_softmax_is_decided_by_the_outputs(tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"class {i}" for i in range(10)) + "\n\n")  # a trailing blank line is no label
    raw = declare(IMAGE, LOGITS, REFERENCE, labels=labels)
    assert raw.postprocessing.kind == "classes" and raw.postprocessing.softmax
    assert raw.files["labels.txt"].count(b"\n") == 10
    probabilities = np.full((4, 10), 0.1, np.float32)
    assert not declare(IMAGE, LOGITS, {"logits": probabilities}, labels=labels).postprocessing.softmax
    labels.write_text("a\nb\n")
    with pytest.raises(ModelSourceError, match="2 labels, output 'logits' \\[1, 10\\] has 10 classes"):
        declare(IMAGE, LOGITS, REFERENCE, labels=labels)
    with pytest.raises(ModelSourceError, match="--labels go with --postprocess classes"):
        declare(IMAGE, LOGITS, REFERENCE, labels=labels, postprocess="embedding")


def test_a_tokenizer_needs_token_inputs(tmp_path):
    (tmp_path / "bad.json").write_text("{}")
    ids = (TensorSpec("input_ids", (1, 8), "int64"), TensorSpec("attention_mask", (1, 8), "int64"))
    with pytest.raises(ModelSourceError, match="not a Hugging Face tokenizer.json"):
        declare(ids, LOGITS, REFERENCE, tokenizer=tmp_path / "bad.json")
    with pytest.raises(ModelSourceError, match="cannot read --tokenizer"):
        declare(ids, LOGITS, REFERENCE, tokenizer=tmp_path / "missing.json")
    from tokenizers import Tokenizer, models

    Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1}, unk_token="[UNK]")).save(str(tmp_path / "tokenizer.json"))
    steps = declare(ids, LOGITS, REFERENCE, tokenizer=tmp_path / "tokenizer.json").preprocessing.text
    assert (steps.ids, steps.attention_mask, steps.token_type_ids) == ("input_ids", "attention_mask", None)
    with pytest.raises(ModelSourceError, match="input_ids"):
        declare(IMAGE, LOGITS, REFERENCE, tokenizer=tmp_path / "tokenizer.json")
    with pytest.raises(ModelSourceError, match="exclude each other"):
        declare(ids, LOGITS, REFERENCE, tokenizer=tmp_path / "tokenizer.json", preprocess="imagenet")


def test_the_cli_says_it_in_one_line_before_converting(tiny_model):
    """The tiny model takes x:[1, 4]: no image input to preprocess."""
    done = subprocess.run([EDGEPACK, "build", f"{tiny_model}:create", "-o", tiny_model.parent / "out",
                           "--calibration", tiny_model.parent / "calib.npz", "--preprocess", "imagenet"],
                          capture_output=True, text=True)
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "one 4-D float input" in done.stderr and not (tiny_model.parent / "out").exists()
