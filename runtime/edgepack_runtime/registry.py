"""Named plugins of one kind, found the same way for every kind (formats, backends, …).

Built-ins are listed in code (so a package run from its source tree, like the emulated
device's copy of the runtime, still has them); plugins are found through an entry point
group, read once on first use; `register()` adds one in-process. Built-ins and in-process
registrations win over entry points of the same name.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import Callable, Generic, Iterator, Mapping, Optional, TypeVar

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """`kind` names the plugins in messages; `group` is their entry point group; `builtin`
    maps names to entry point values ("module" or "module:attr"); `load` turns an entry
    point into the registered object (default: the value as it is); `check` is run on
    every object registered, and raises if it breaks the kind's contract."""

    def __init__(self, kind: str, group: str, builtin: Mapping[str, str],
                 # Without `load`, T is str: mypy cannot tie a default to the type variable.
                 load: Callable[[EntryPoint], T] = lambda point: point.value,  # type: ignore[assignment,return-value]
                 check: Optional[Callable[[str, T], None]] = None) -> None:
        self.kind, self.group = kind, group
        self._builtin, self._load, self._check = dict(builtin), load, check
        self._entries: dict[str, T] = {}
        self._loaded = False

    def register(self, name: str, entry: T) -> T:
        """Add `entry` as `name` (a later one of the same name replaces it)."""
        if self._check is not None:
            self._check(name, entry)
        self._entries[name] = entry
        return entry

    def all(self) -> dict[str, T]:
        """Every registered entry by name: built-ins, entry points (read once) and registrations."""
        if not self._loaded:
            self._loaded = True
            builtin = [EntryPoint(name, value, self.group) for name, value in self._builtin.items()]
            plugins = sorted(entry_points(group=self.group), key=lambda p: p.name)
            for point in builtin + [p for p in plugins if p.name not in self._builtin]:
                if point.name not in self._entries:  # in-process registrations win
                    self.register(point.name, self._load(point))
        return self._entries

    def __contains__(self, name: str) -> bool:
        return name in self.all()

    def __getitem__(self, name: str) -> T:
        return self.all()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.all())

    def fresh(self) -> "Registry[T]":
        """The same registry with nothing loaded or registered yet (for tests of discovery)."""
        return Registry(self.kind, self.group, self._builtin, self._load, self._check)
