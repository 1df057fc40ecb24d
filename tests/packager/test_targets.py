from pathlib import Path

import pytest

from edgepack import targets
from edgepack.errors import TargetError
from edgepack.targets import HOST_ID, load_target, target_ids
from edgepack_runtime.hostinfo import HostInfo

REQUIRED = {"host", "raspberry-pi/4b", "raspberry-pi/5", "x86-64/avx2", "x86-64/avx512-vnni", "arm64/generic"}


def test_every_profile_loads_into_a_frozen_dataclass():
    ids = target_ids()
    assert REQUIRED <= set(ids)
    for target_id in ids:
        profile = load_target(target_id)
        assert profile.id == target_id
        assert profile.arch in ("x86_64", "aarch64")
        assert profile.threads >= 1 and profile.cores >= 1
        # ncnn (issue #23) on the ARM boards, where its published figures lead
        assert profile.formats == ("onnx", "tflite") + (("ncnn",) if profile.arch == "aarch64" else ())
        assert profile.settings("onnx").opset >= 17
        for fmt in profile.formats:
            settings = profile.settings(fmt)
            assert settings.precisions[0] == "fp32"  # the base every other precision derives from
            assert set(settings.precisions) <= set(profile.prefer)
            if hasattr(settings, "int8"):  # ncnn builds no int8 (no quantization tools on PyPI)
                assert settings.int8.relies_on, f"{target_id}: {fmt} int8 preset must say which ISA it relies on"
        with pytest.raises(AttributeError):
            profile.threads = 99


def test_profiles_encode_the_devices_they_name():
    pi4, pi5 = load_target("raspberry-pi/4b"), load_target("raspberry-pi/5")
    assert (pi4.cpu, pi4.cores, pi5.cpu, pi5.cores) == ("Cortex-A72", 4, "Cortex-A76", 4)
    assert "asimddp" not in pi4.isa and "asimddp" in pi5.isa  # dot-product: Pi 5 only
    assert "fphp" in pi5.isa
    assert "fp16" in pi5.settings("tflite").precisions and "fp16" not in pi4.settings("tflite").precisions
    # Non-VNNI x86 needs reduce_range to avoid VPMADDUBSW saturation; VNNI does not.
    assert load_target("x86-64/avx2").settings("onnx").int8.reduce_range is True
    assert load_target("x86-64/avx512-vnni").settings("onnx").int8.reduce_range is False


def test_extends_overrides_only_what_it_names():
    base, pi5 = load_target("arm64/generic"), load_target("raspberry-pi/5")
    assert pi5.settings("onnx").int8.relies_on == ("asimd", "asimddp")
    assert pi5.settings("tflite").int8.relies_on == ("asimd", "asimddp")
    assert pi5.settings("tflite").int8.recipe == base.settings("tflite").int8.recipe
    assert base.settings("onnx").int8.relies_on == ("asimd",)
    # everything pi5 does not override comes from arm64/generic
    assert pi5.settings("onnx").opset == base.settings("onnx").opset
    assert pi5.settings("onnx").int8.activation_type == base.settings("onnx").int8.activation_type
    assert pi5.formats == base.formats


def test_unknown_target_suggests_the_closest():
    with pytest.raises(TargetError, match=r"unknown target 'raspberry-pi/5b'; did you mean 'raspberry-pi/5'"):
        load_target("raspberry-pi/5b")


@pytest.fixture
def profile_dir(tmp_path, monkeypatch):
    """A private profiles directory holding a copy of arm64/generic."""
    (tmp_path / "arm64").mkdir()
    real = Path(str(targets._profiles_root())) / "arm64" / "generic.toml"
    (tmp_path / "arm64" / "generic.toml").write_text(real.read_text())
    monkeypatch.setattr(targets, "_profiles_root", lambda: tmp_path)
    return tmp_path


def test_unknown_key_is_an_error_with_did_you_mean(profile_dir):
    (profile_dir / "arm64" / "typo.toml").write_text('extends = "arm64/generic"\nthread = 2\n')
    with pytest.raises(TargetError, match=r"target arm64/typo has unknown key 'thread'; did you mean 'threads'"):
        load_target("arm64/typo")
    (profile_dir / "arm64" / "typo.toml").write_text('extends = "arm64/generic"\nthreads = "4"\n')
    with pytest.raises(TargetError, match=r"target arm64/typo.threads must be a non-negative integer"):
        load_target("arm64/typo")
    (profile_dir / "arm64" / "typo.toml").write_text('extends = "arm64/generic"\n[onnx.int8]\nper_channel = "yes"\n')
    with pytest.raises(TargetError, match=r"target arm64/typo.onnx.int8.per_channel must be true or false"):
        load_target("arm64/typo")


def test_unknown_nested_key_is_an_error(profile_dir):
    (profile_dir / "arm64" / "typo.toml").write_text('extends = "arm64/generic"\n[onnx.int8]\nper_chanel = false\n')
    with pytest.raises(TargetError, match=r"did you mean 'per_channel'"):
        load_target("arm64/typo")


def test_preset_values_are_checked_when_the_profile_loads(profile_dir):
    (profile_dir / "arm64" / "bad.toml").write_text('extends = "arm64/generic"\n'
                                                    '[onnx.int8]\nactivation_type = "int4"\n')
    with pytest.raises(TargetError, match="unknown activation_type in target arm64/bad.onnx.int8 'int4'"):
        load_target("arm64/bad")
    (profile_dir / "arm64" / "bad.toml").write_text('extends = "arm64/generic"\n'
                                                    '[tflite.int8]\nrange_update = "minmax"\n')
    with pytest.raises(TargetError, match="did you mean 'min_max'"):
        load_target("arm64/bad")


def test_extends_cycle_is_reported(profile_dir):
    (profile_dir / "arm64" / "a.toml").write_text('extends = "arm64/b"\n')
    (profile_dir / "arm64" / "b.toml").write_text('extends = "arm64/a"\n')
    with pytest.raises(TargetError, match="cycle"):
        load_target("arm64/a")


def test_unsupported_precision_is_rejected(profile_dir):
    (profile_dir / "arm64" / "bad.toml").write_text('extends = "arm64/generic"\n'
                                                    '[onnx]\nprecisions = ["fp32", "int4"]\n')
    with pytest.raises(TargetError, match="unknown precision in target arm64/bad.onnx 'int4'"):
        load_target("arm64/bad")


@pytest.mark.parametrize("arch, flags, base", [
    ("x86_64", ("avx2", "avx512_vnni"), "x86-64/avx512-vnni"),
    ("x86_64", ("avx2",), "x86-64/avx2"),
    ("aarch64", ("asimd",), "arm64/generic"),
])
def test_host_target_is_detected_and_extends_the_closest_profile(arch, flags, base):
    host = HostInfo(arch=arch, cpu="Test CPU", cores=3, isa=flags)
    profile = load_target(HOST_ID, host)
    assert (profile.arch, profile.cpu, profile.cores, profile.threads, profile.isa) == (arch, "Test CPU", 3, 3, flags)
    assert profile.settings("onnx") == load_target(base).settings("onnx")
    assert base in profile.description


def test_host_without_a_matching_profile_is_an_error():
    with pytest.raises(TargetError, match="no profile fits this machine"):
        load_target(HOST_ID, HostInfo(arch="riscv64", cpu="x", cores=1))


def test_matches_host_needs_arch_and_the_presets_isa():
    pi5 = load_target("raspberry-pi/5")
    x86 = HostInfo(arch="x86_64", cpu="x", cores=2, isa=("avx2",))
    a76 = HostInfo(arch="aarch64", cpu="x", cores=4, isa=("asimd", "asimddp"))
    a72 = HostInfo(arch="aarch64", cpu="x", cores=4, isa=("asimd",))
    assert not pi5.matches_host(x86, "onnx", "fp32")
    assert pi5.matches_host(a76, "onnx", "int8")
    assert pi5.matches_host(a72, "onnx", "fp32")
    assert not pi5.matches_host(a72, "onnx", "int8")  # no dot-product: its int8 kernels differ
