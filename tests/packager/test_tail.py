"""formats/tail.py: which ops a quantized graph keeps float, on op lists shaped like the
graphs it meets (a YOLO head whose split feeds a weighted DFL layer, a classifier)."""

from edgepack.formats.tail import prefix, tail


def _yolo_head():
    # backbone conv -> (box conv, class conv) -> concat -> split -> (DFL conv -> decode, sigmoid) -> output
    return [
        ("stem", ["images"], ["s"], True),
        ("act", ["s"], ["a"], False),
        ("body", ["a"], ["b"], True),
        ("box", ["b"], ["bx"], True),
        ("cls", ["b"], ["cl"], True),
        ("cat", ["bx", "cl"], ["c"], False),
        ("split", ["c"], ["dist", "logits"], False),
        ("softmax", ["dist"], ["p"], False),
        ("dfl", ["p"], ["d"], True),
        ("decode", ["d", "anchors"], ["xy"], False),
        ("sigmoid", ["logits"], ["scores"], False),
        ("out", ["xy", "scores"], ["output"], False),
    ]


def test_tail_takes_the_final_layers_and_the_split_that_mixes_boxes_and_scores():
    # The split feeds a weighted layer (DFL), so "ops that feed no weighted layer" alone
    # would quantize it, and with it every class score at the box logits' scale.
    assert tail(_yolo_head()) == ["box", "cls", "cat", "split", "softmax", "dfl", "decode", "sigmoid", "out"]


def test_tail_of_a_classifier_is_its_last_layer_and_what_follows():
    ops = [("conv", ["x"], ["c"], True), ("relu", ["c"], ["r"], False),
           ("fc", ["r"], ["l"], True), ("softmax", ["l"], ["p"], False)]
    assert tail(ops) == ["fc", "softmax"]


def test_prefix_is_a_share_of_the_weighted_layers_and_the_ops_up_to_the_next():
    ops = _yolo_head()  # 5 weighted layers
    assert prefix(ops, 0.0) == []
    assert prefix(ops, 0.05) == []  # rounds to no layer
    assert prefix(ops, 0.2) == ["stem", "act"]
    assert prefix(ops, 0.4) == ["stem", "act", "body"]
    assert prefix(ops, 1.0) == [op[0] for op in ops]
