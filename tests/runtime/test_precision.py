"""The one precision table: every precision a format builds is registered, and the
properties the build and the device ask about come from it."""

import pytest

from edgepack_runtime.errors import UsageError
from edgepack_runtime.precision import BASE, PRECISIONS, is_calibrated, is_integer, is_quantized, precision


def test_properties_of_the_builtin_precisions():
    assert [p for p in PRECISIONS if is_integer(p)] == ["int8", "dynamic-int8"]
    assert [p for p in PRECISIONS if is_calibrated(p)] == ["int8"]  # dynamic int8 computes ranges at run time
    assert [p for p in PRECISIONS if is_quantized(p)] == ["int8", "dynamic-int8"]
    assert BASE == "fp32" and precision(BASE).tolerance.min_cosine > precision("fp16").tolerance.min_cosine
    assert {PRECISIONS[p].relies_on for p in PRECISIONS} == {None, "int8"}
    assert not is_integer("int4") and not is_calibrated("int4")  # unknown names are nothing
    # What the formats ask instead of the name: static or run-time ranges, what the weights are stored as.
    assert [p for p, kind in PRECISIONS.items() if kind.dynamic] == ["dynamic-int8"]
    assert {p: kind.weights for p, kind in PRECISIONS.items()} == {
        "fp32": "float32", "fp16": "float16", "int8": "int8", "dynamic-int8": "int8"}


def test_an_unknown_precision_says_which_exist():
    with pytest.raises(UsageError, match="unknown precision 'int9'; did you mean 'int8'"):
        precision("int9")


def test_every_format_builds_registered_precisions_only():
    from edgepack.formats import formats

    for fmt in formats().values():
        assert BASE in fmt.precisions, fmt.name
        assert set(fmt.precisions) <= set(PRECISIONS), fmt.name
