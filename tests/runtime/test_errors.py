"""One error boundary: every error class in the two errors modules, drawn in one tree, and
foreign exceptions mapped with their cause kept."""

import importlib
import pkgutil

import pytest

import edgepack
import edgepack_runtime
from edgepack_runtime import errors
from edgepack_runtime.errors import BundleError, EdgepackError, InputError, causes, mapped


def _subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def test_every_error_class_lives_in_an_errors_module_and_in_the_tree():
    for package in (edgepack_runtime, edgepack):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if not info.name.startswith(("edgepack.ansible", "edgepack.__main__", "edgepack_runtime.__main__")):
                importlib.import_module(info.name)
    homes = {"edgepack_runtime.errors", "edgepack.errors"}
    ours = [c for c in _subclasses(EdgepackError) if c.__module__.split(".")[0] in ("edgepack", "edgepack_runtime")]
    assert len(ours) >= 20
    for cls in ours:
        assert cls.__module__ in homes, f"{cls.__name__} is defined in {cls.__module__}"
        assert f"── {cls.__name__} " in errors.__doc__, f"{cls.__name__} is missing from the tree"


def test_mapped_keeps_the_cause_and_passes_its_own_type_through():
    with pytest.raises(BundleError, match=r"^reading x \(ValueError: bad byte\); rebuild it$") as info:
        with mapped(BundleError, "reading x", "rebuild it"):
            raise ValueError("bad byte")
    assert isinstance(info.value.__cause__, ValueError)
    assert causes(info.value) == ["ValueError: bad byte"]
    original = BundleError("as it was")
    with pytest.raises(BundleError) as info:
        with mapped(BundleError, "reading x"):
            raise original
    assert info.value is original
    with pytest.raises(BundleError, match=r"^reading x \(too big; shrink it\)$"):  # ours lend their message
        with mapped(BundleError, "reading x"):
            raise InputError("too big; shrink it")
    with pytest.raises(KeyError):  # only what it is told to catch
        with mapped(BundleError, "reading x", catch=(ValueError,)):
            raise KeyError("k")
