"""Build options have one source (issue 29): the request's fields. `edgepack build`'s flags
and `edgepack.build()`'s keywords are made from them and make the same BuildRequest."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import edgepack
from edgepack.cli import build_cmd, main
from edgepack.errors import UsageError
from edgepack.request import _PARTS, OPTIONS, BuildRequest


def _requested_by_cli(monkeypatch, *args) -> BuildRequest:
    """The BuildRequest `edgepack build ARGS` hands to the pipeline (which then stops it)."""
    import edgepack.pipeline

    seen = []

    def stop(request):
        seen.append(request)
        raise UsageError("stopped before building")

    monkeypatch.setattr(edgepack.pipeline, "build_from", stop)
    result = CliRunner().invoke(main, ["build", *map(str, args)])
    assert "error: stopped before building" in result.output, result.output
    (request,) = seen
    return request


def test_the_command_line_and_python_make_the_same_request(monkeypatch, tmp_path):
    plain = _requested_by_cli(monkeypatch, "m.py:create", "-o", tmp_path / "b")
    assert plain == BuildRequest.of("m.py:create", tmp_path / "b")  # the flags' defaults are the fields'
    assert plain.signing is None
    flags = _requested_by_cli(
        monkeypatch, "m.py:create", "-o", tmp_path / "b", "--target", "raspberry-pi/5", "--formats", "onnx, tflite",
        "--input", "x:1x4:float32", "--input", "y:1x2:int64", "--eval", "e.npz", "--accuracy-budget", "2",
        "--prefer", "speed", "--allow-partial", "--sign", "k.pem", "--verify-emulated", "--name", "n")
    assert flags == BuildRequest.of(
        "m.py:create", tmp_path / "b", "raspberry-pi/5", formats=["onnx", "tflite"],
        inputs=("x:1x4:float32", "y:1x2:int64"), eval_data=Path("e.npz"), max_accuracy_drop=2.0, prefer="speed",
        allow_partial=True, sign=Path("k.pem"), verify_emulated=True, name="n")
    assert (flags.data.eval_data, flags.budget.max_accuracy_drop, flags.output.allow_partial,
            flags.signing and flags.signing.key) == (Path("e.npz"), 2.0, True, Path("k.pem"))


def test_every_request_field_is_an_option_or_a_positional_argument():
    """A field without option(...) could be set neither from the CLI nor from build()."""
    fields = {(outer.name, f.name) for outer in dataclasses.fields(BuildRequest) if outer.name in _PARTS
              for f in dataclasses.fields(_PARTS[outer.name])}
    fields |= {(None, f.name) for f in dataclasses.fields(BuildRequest) if f.name not in _PARTS}
    as_options = {(o.part, o.field) for o in OPTIONS.values()}
    assert fields - as_options == {("model", "model"), ("output", "path"), (None, "target")}
    flags = {p.name: p for p in build_cmd.params}
    for keyword, o in OPTIONS.items():
        assert flags[keyword].default == o.default, keyword
        assert o.flag.names[-1] in flags[keyword].opts, keyword


def test_an_unknown_keyword_is_one_line_naming_the_options(tmp_path):
    module = torch.nn.Linear(4, 2)
    for target in ("host", ["host", "raspberry-pi/5"]):
        with pytest.raises(UsageError) as raised:
            edgepack.build(module, tmp_path / "b", target, inputs={"x": torch.zeros(1, 4)}, calbration={})
        message = str(raised.value)
        assert "\n" not in message
        assert message.startswith("edgepack.build() has no option 'calbration'; did you mean 'calibration'? ")
        assert all(keyword in message for keyword in OPTIONS)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("options, says", [
    ({"prefer": "fastest"}, "prefer='fastest': 'fastest' is not one of 'balanced', 'accuracy', 'speed'"),
    ({"min_cosine": 5}, "min_cosine=5: 5.0 is not in the range -1<=x<=1 (--min-cosine)"),
    ({"task": "segmentation"}, "task='segmentation'"),
])
def test_a_python_option_out_of_range_is_refused_as_the_flag_refuses_it(options, says, tmp_path):
    with pytest.raises(UsageError, match=re.escape(says)):
        BuildRequest.of("model.py:create", tmp_path / "out", **options)
    assert not (tmp_path / "out").exists()
