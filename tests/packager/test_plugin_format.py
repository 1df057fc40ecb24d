"""A format added by one file plus profile data (issue #11): tests/plugins/numpy_format.py,
registered in-process, and a profile in a directory named by $EDGEPACK_TARGETS. It builds,
validates and runs through load(), following docs/extending.md step by step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import edgepack
import edgepack_runtime
from edgepack.errors import BuildFailed, TargetError
from edgepack.formats import QuantResult, Recipe
from edgepack.holdout import CROSSFIT_FOLDS
from edgepack.targets import TARGETS_ENV, load_target
from edgepack_runtime.errors import IntegrityError
from edgepack_runtime.parity import self_test

from ..plugins import numpy_format

PROFILE = '''
# A box that runs numpy models: the x86-64/avx2 profile with one more format.
extends = "x86-64/avx2"
description = "test: numpy format"
formats = ["numpy", "onnx"]
prefer = ["fp32"]

[numpy]
precisions = ["fp32"]
'''


@pytest.fixture
def numpy_target(tmp_path, monkeypatch):
    numpy_format.register()
    (tmp_path / "profiles" / "test").mkdir(parents=True)
    (tmp_path / "profiles" / "test" / "numpy-box.toml").write_text(PROFILE)
    monkeypatch.setenv(TARGETS_ENV, str(tmp_path / "profiles"))
    return "test/numpy-box"


def test_a_format_from_one_file_builds_validates_and_runs(numpy_target, tmp_path):
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 24), torch.nn.ReLU(),
                                 torch.nn.Linear(24, 3)).eval()
    calibration = {"x": np.random.default_rng(0).standard_normal((24, 1, 4, 4)).astype(np.float32)}
    result = edgepack.build(module, tmp_path / "bundle", numpy_target, inputs={"x": torch.zeros(1, 4, 4)},
                            calibration=calibration, precisions=["fp32"])
    arts = {a.name: a for a in result.manifest.artifacts}
    assert set(arts) == {"numpy-fp32", "onnx-fp32"}
    numpy_art = arts["numpy-fp32"]
    assert numpy_art.status == "ok" and numpy_art.validation.passed and numpy_art.path == "model.fp32.npz"
    assert [f.path for f in numpy_art.files] == ["model.fp32.npz", "model.fp32.layers.json"]  # two files
    assert numpy_art.size_bytes == sum((result.path / f.path).stat().st_size for f in numpy_art.files)
    assert numpy_art.validation.backend.startswith("numpy ")
    assert result.manifest.toolchain["numpy"] == np.__version__

    model = edgepack_runtime.load(result.path, artifact="numpy-fp32")
    x = np.random.default_rng(1).standard_normal((1, 4, 4)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(model.run({"x": x})["output"], module(torch.from_numpy(x)).numpy(), atol=1e-5)
    assert self_test(model).passed
    (result.path / "model.fp32.layers.json").write_text('[["relu", 0]]')  # a companion tampered with
    with pytest.raises(IntegrityError, match="model.fp32.layers.json does not match its sha256"):
        edgepack_runtime.load(result.path, artifact="numpy-fp32")


def test_a_misspelt_format_table_is_refused_with_did_you_mean(tmp_path, monkeypatch):
    numpy_format.register()
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "typo.toml").write_text(PROFILE.replace("[numpy]", "[nunpy]"))
    monkeypatch.setenv(TARGETS_ENV, str(tmp_path))
    with pytest.raises(TargetError, match="target test/typo has unknown key 'nunpy'; did you mean 'numpy'"):
        load_target("test/typo")


def test_an_installed_plugin_is_found_through_its_entry_points(tmp_path, monkeypatch):
    """What `pip install edgepack-numpy` would leave: a dist-info whose entry points name
    the format class and the backend module; nothing registered by hand."""
    from edgepack import formats as format_registry
    from edgepack_runtime import backends as backend_registry

    dist = tmp_path / "site" / "edgepack_numpy-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: edgepack-numpy\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[edgepack.formats]\nnumpy = tests.plugins.numpy_format:NumpyFormat\n\n"
        "[edgepack_runtime.backends]\nnumpy = tests.plugins.numpy_format\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    for registry in (format_registry, backend_registry):  # fresh registries, the real ones restored after
        monkeypatch.setattr(registry, "_registry", registry._registry.fresh())

    fmt = format_registry.get_format("numpy")
    assert type(fmt).__name__ == "NumpyFormat" and fmt.suffix == ".npz"
    assert backend_registry.backends()["numpy"] == "tests.plugins.numpy_format"
    assert backend_registry.backend_available("numpy")


class _HalfOrDamaged(numpy_format.NumpyFormat):
    """numpy with an fp16 made by two recipes: the first writes a file its backend refuses to load."""

    precisions = ("fp32", "fp16")

    def recipes(self, target, precision) -> list[Recipe]:
        return [Recipe(damaged=True), Recipe(damaged=False)]

    def quantize(self, exported, out, target, plan, calibration) -> QuantResult:
        if plan.recipe["damaged"]:
            out.write_bytes(b"not an npz")
        else:
            with np.load(exported.path) as arrays, open(out, "wb") as f:
                np.savez(f, **{k: v.astype(np.float16) for k, v in arrays.items()})
        self.companions(out)[0].write_text(self.companions(exported.path)[0].read_text())
        return QuantResult("numpy", Recipe(plan.recipe, weights="fp16"))


def _build_linear(fmt, target: str, tmp_path, offered: list[str], monkeypatch, module=None, calibration=None,
                  profile: str = PROFILE, **kwargs):
    """Build `module` (a one-Linear model) with `fmt` registered as "numpy" and the profile
    offering `offered`."""
    from edgepack import formats as format_registry

    monkeypatch.setattr(format_registry, "_registry", format_registry._registry.fresh())  # the real one after
    format_registry.register(fmt)  # through the contract check, as any plugin
    path = tmp_path / "profiles" / "test" / "numpy-box.toml"
    path.write_text(profile.replace('[numpy]\nprecisions = ["fp32"]', f"[numpy]\nprecisions = {offered}"))
    module = module or torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3)).eval()
    if calibration is None:
        calibration = {"x": np.random.default_rng(0).standard_normal((24, 1, 4, 4)).astype(np.float32)}
    return edgepack.build(module, tmp_path / "bundle", target, inputs={"x": torch.zeros(1, 4, 4)},
                          calibration=calibration, formats=["numpy"], **kwargs)


def test_a_candidate_its_backend_cannot_load_is_rejected_not_the_build(numpy_target, tmp_path, monkeypatch):
    result = _build_linear(_HalfOrDamaged(), numpy_target, tmp_path, ["fp32", "fp16"], monkeypatch,
                           precisions=["fp32", "fp16"])
    half = next(a for a in result.manifest.artifacts if a.name == "numpy-fp16")
    assert half.status == "ok", half.error
    trail = half.quantization.search
    assert [c["recipe"] for c in trail if "recipe" in c] == [{"damaged": False}]
    (error,) = [c["error"] for c in trail if "error" in c]
    assert error.startswith("the runtime cannot load or run this numpy-fp16 candidate (")
    assert "is not a numpy-format artifact" in error


class _DamagedExport(numpy_format.NumpyFormat):
    """numpy whose export writes a file its own backend refuses to load."""

    def export(self, module, inputs, output_names, target, out):
        exported = super().export(module, inputs, output_names, target, out)
        out.write_bytes(b"not an npz")
        return exported


def test_an_export_its_backend_cannot_load_fails_that_artifact_with_one_line(numpy_target, tmp_path, monkeypatch):
    with pytest.raises(BuildFailed) as failed:
        _build_linear(_DamagedExport(), numpy_target, tmp_path, ["fp32"], monkeypatch)
    (art,) = failed.value.result.manifest.artifacts
    assert art.status == "failed" and art.error.startswith("the runtime cannot load or run numpy-fp32 (")
    assert not (tmp_path / "bundle").exists()


def test_the_format_contract_is_checked_when_a_format_registers():
    from edgepack.formats import check_format, formats, register

    for name, fmt in formats().items():  # the built-ins keep it
        check_format(name, fmt)

    class Undeclared(numpy_format.NumpyFormat):
        def sensitive_layers(self, fp32, quantized, calibration, target):
            return []

    with pytest.raises(TargetError, match=r"defines sensitive_layers\(\) but does not declare 'mixed_precision'"):
        register(Undeclared())

    class Overclaimed(numpy_format.NumpyFormat):
        capabilities = frozenset({"multi_file", "attention"})

    with pytest.raises(TargetError, match=r"lacks has_attention\(\) but declares 'attention'"):
        register(Overclaimed())

    class Int4(numpy_format.NumpyFormat):
        precisions = ("fp32", "int4")

    with pytest.raises(TargetError, match="registered .*unknown: int4"):
        register(Int4())

    class DuckTyped:  # the attributes, but not the class: the contract is not checked, so it is refused
        name, suffix, precisions = "duck", ".duck", ("fp32",)

    with pytest.raises(TargetError, match="'duck' .* is not an edgepack.formats.ExportFormat; subclass it"):
        register(DuckTyped())
    assert "duck" not in formats()


def test_a_precision_added_by_a_plugin_needs_no_edit_elsewhere(numpy_target, tmp_path, monkeypatch):
    """docs/extending.md: register the precision, list it in the format and the profile."""
    from edgepack import formats as format_registry
    from edgepack_runtime import precision as precision_registry
    from edgepack_runtime.precision import Precision, Tolerance

    weights16 = Precision("w16", integer=False, calibrated=False, tolerance=Tolerance(1e-6, 1e-2, 0.9991))
    monkeypatch.setitem(precision_registry.PRECISIONS, "w16", weights16)  # register_precision, undone after

    class Weights16(_HalfOrDamaged):
        precisions = ("fp32", "w16")

        def recipes(self, target, precision):
            return [Recipe(damaged=False)]

    format_registry.check_format("numpy", Weights16())  # what register() checks: w16 is a known precision now
    result = _build_linear(Weights16(), numpy_target, tmp_path, ["fp32", "w16"], monkeypatch)
    art = next(a for a in result.manifest.artifacts if a.precision == "w16")
    assert art.status == "ok" and art.validation.passed, art.error
    assert art.validation.min_cosine == weights16.tolerance.min_cosine  # the registered tolerance judged it
    assert edgepack_runtime.load(result.path, artifact="numpy-w16").run({"x": np.ones((1, 4, 4), np.float32)})


# A board this host cannot stand in for (another architecture): its int8 is chosen on
# accuracy alone, as for a Raspberry Pi built on x86, whatever this host's ISA.
FOREIGN_PROFILE = PROFILE.replace('description = "test: numpy format"',
                                  'description = "test: numpy format, another architecture"\narch = "riscv64"')


def _huge_input_model() -> torch.nn.Sequential:
    """Four Linear layers (no biases: the answer is the input's) whose input has one feature a
    thousand times the others, which the first layer ignores: quantized at its input, the
    int8 steps that span the huge feature round every other one away; float there, the rest
    takes int8 without loss."""
    torch.manual_seed(0)
    layers = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 16), torch.nn.ReLU(),
                                 torch.nn.Linear(16, 16), torch.nn.ReLU(), torch.nn.Linear(16, 16),
                                 torch.nn.ReLU(), torch.nn.Linear(16, 3))
    with torch.no_grad():
        for layer in layers[1::2]:
            layer.bias.zero_()
        layers[1].weight[:, 0] = 0.0
    return layers.eval()


def test_a_plugin_format_that_returns_its_graph_gets_the_prefix_step(numpy_target, tmp_path, monkeypatch):
    """The numpy format says nothing about prefixes: its export returns its op graph and its
    quantize keeps float the ops its plan names. The search finds the first layer float."""
    import inspect

    assert "prefix" not in inspect.getsource(numpy_format).lower()
    samples = np.random.default_rng(0).standard_normal((24, 1, 4, 4)).astype(np.float32)
    samples[:, :, 0, 0] *= 1000.0
    quantized: list[frozenset] = []  # the float ops of every quantization, the folds' included

    class Counting(numpy_format.NumpyFormat):
        def quantize(self, exported, out, profile, plan, calibration):
            quantized.append(plan.float_ops)
            return super().quantize(exported, out, profile, plan, calibration)

    result = _build_linear(Counting(), numpy_target, tmp_path, ["fp32", "int8"], monkeypatch,
                           module=_huge_input_model(), calibration={"x": samples}, profile=FOREIGN_PROFILE,
                           precisions=["fp32", "int8"])
    int8 = result.manifest.artifact("numpy-int8")
    assert int8.status == "ok" and int8.accuracy.within_budget, int8.error
    trail = [c for c in int8.quantization.search if "recipe" in c]
    whole, *floats = trail
    assert "keeps_float" not in whole and not whole["within_budget"]  # quantized at its input, it misses
    # ... and fails parity, so its first look drops it: one quantization, where a cross-fitted
    # candidate that goes on costs one more per fold.
    assert not whole["parity"] and whole["screened_out"]["samples"] == 24 and "selection" not in whole
    assert quantized.count(frozenset()) == 1
    assert quantized.count(frozenset(int8.quantization.float_ops)) == 1 + CROSSFIT_FOLDS
    assert floats and floats[0]["keeps_float"]["prefix"] == 0.25  # the largest share first
    chosen = next(c for c in trail if c["chosen"])
    assert chosen["keeps_float"]["prefix"] and chosen["answer_error"] < whole["answer_error"] / 10
    # What stayed float, in one spelling: the first Linear and the ops up to the next one.
    assert int8.quantization.float_ops == ("flatten1", "linear2", "relu3")
    assert int8.quantization.tool == "numpy" and int8.quantization.calibration == "data"
    model = edgepack_runtime.load(result.path, artifact="numpy-int8")
    assert self_test(model).passed


OLD_BACKEND = '''
SESSION_API = {api}

def available():
    return True

class Session:  # written against an older protocol: no fixed_shapes()
    backend, backend_version, threads = "old", "0.1", 1

    def native_dtypes(self):
        return {{}}

    def quantization(self):
        return {{}}

    def run(self, feeds, raw=False):
        return {{}}

def open_session(path, threads, input_names, output_names):
    return Session()
'''


@pytest.mark.parametrize("api, message", [
    (1, "the old backend's session lacks fixed_shapes: it implements an older Session protocol than 1; upgrade"),
    (0, "the old backend old_backend_0 implements Session protocol 0; this edgepack-runtime runs protocol 1"),
])
def test_a_backend_of_another_session_protocol_fails_with_one_line(tmp_path, monkeypatch, api, message):
    from edgepack_runtime import backends as backend_registry
    from edgepack_runtime.errors import BackendUnavailableError
    from edgepack_runtime.manifest import TensorSpec

    (tmp_path / f"old_backend_{api}.py").write_text(OLD_BACKEND.format(api=api))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(backend_registry, "_registry", backend_registry._registry.fresh())
    backend_registry.register_backend("old", f"old_backend_{api}")
    spec = TensorSpec("x", (1, 4), "float32")
    with pytest.raises(BackendUnavailableError) as error:
        backend_registry.open_session("old", tmp_path / "model.old", 1, [spec], [spec])
    assert str(error.value).startswith(message) and "\n" not in str(error.value)
