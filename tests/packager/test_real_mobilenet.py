"""int8 on a real pretrained network: torchvision's ImageNet MobileNetV2 on real photos.

A slice of examples/mobilenet_v2 (ONNX only, 3 views per eval photo) keeps CI short;
benchmarks/fidelity.py runs the full table for every target.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import edgepack
import edgepack_runtime
from edgepack.model_source import load_model

from ..conftest import ROOT, import_file

MODEL = f"{ROOT / 'examples' / 'mobilenet_v2' / 'model.py'}:create"
CAT_CLASSES = range(281, 286)  # ImageNet's domestic cats: chelsea.png is a tabby


@pytest.mark.slow
def test_the_weights_are_real(mobilenet_data):
    module = load_model(MODEL, weights=mobilenet_data["weights"]).module
    with np.load(mobilenet_data["eval"]) as data:
        first_view_of_the_cat = torch.from_numpy(data["image"][:1])
    with torch.no_grad():
        assert int(module(first_view_of_the_cat).argmax()) in CAT_CLASSES


@pytest.mark.slow
def test_int8_search_beats_the_preset_and_ships_only_within_budget(mobilenet_data, tmp_path):
    result = edgepack.build(MODEL, tmp_path / "mnv2", "host", formats=["onnx"], weights=mobilenet_data["weights"],
                            calibration=mobilenet_data["calibration"], eval_data=mobilenet_data["eval"],
                            allow_partial=True)
    int8 = result.manifest.artifact("onnx-int8")
    trail = [t for t in int8.quantization.search if "recipe" in t]
    preset, chosen = trail[0], next(t for t in trail if t["chosen"])
    assert len(trail) >= 3
    assert result.manifest.task == "classify" and chosen["selection"]["metric"] == "top1_agreement"
    # min/max alone loses most on this network: the search keeps something more faithful, or the preset held
    assert chosen["answer_error"] <= preset["answer_error"] or preset["within_budget"]
    # 15 views of 5 photos: the figures are the halves' crossed-over confirmation, over 5 groups
    assert int8.accuracy.data == "eval" and int8.accuracy.split == "confirmation" and int8.accuracy.samples == 15
    agreement = int8.accuracy.metric("top1_agreement")
    assert agreement.low <= agreement.value <= agreement.high and agreement.groups == 5
    if int8.status == "ok":
        assert int8.accuracy.within_budget and agreement.value >= result.manifest.min_agreement
        assert (result.path / int8.path).is_file()
    else:
        assert int8.status == "rejected" and not (result.path / "model.int8.onnx").exists()


@pytest.mark.slow
def test_photos_in_labels_out_match_pytorch_with_torchvisions_own_transforms(mobilenet_data, tmp_path):
    """`--preprocess imagenet --labels`: on every eval photo, the runtime's tensor equals
    torchvision's Resize(256), CenterCrop(224), ToTensor, Normalize on the same file, and
    the top-5 labels equal PyTorch's on torchvision's tensor."""
    from PIL import Image

    result = edgepack.build(MODEL, tmp_path / "mnv2", "host", formats=["onnx"], precisions=["fp32"],
                            weights=mobilenet_data["weights"], calibration=mobilenet_data["calibration"],
                            preprocess="imagenet", labels=mobilenet_data["labels"])
    reference = import_file(ROOT / "examples" / "torchvision_reference.py")
    photos = sorted(mobilenet_data["photos"].iterdir())
    assert len(photos) == 11
    with reference.torchvision_transforms(mobilenet_data["labels"].parent) as T:
        transform = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                               T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
        tensors = {}
        for photo in photos:
            with Image.open(photo) as image:
                tensors[photo] = transform(image.convert("RGB"))[None]
    module = load_model(MODEL, weights=mobilenet_data["weights"]).module
    names = mobilenet_data["labels"].read_text().splitlines()
    with edgepack_runtime.load(result.path) as model:
        for photo, expected in tensors.items():
            assert np.abs(model.preprocess(photo)["image"] - expected.numpy()).max() <= 1e-5, photo.name
            with torch.no_grad():
                top5 = [names[i] for i in module(expected)[0].topk(5).indices]
            assert [label for label, _ in model.predict(photo).top] == top5, photo.name
