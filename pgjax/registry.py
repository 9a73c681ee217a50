"""One registry type for every extensible family (device types, protocols)."""

from __future__ import annotations

from collections.abc import Callable


class Registry(dict):
    """A name -> entry mapping whose entries carry a `.name`; errors name the family."""

    def __init__(self, family: str, check: Callable[[object], None] | None = None):
        super().__init__()
        self.family = family
        self._check = check

    def register(self, entry, overwrite: bool = False):
        """Add `entry` under `entry.name` (after the family's own check); returns it."""
        if self._check is not None:
            self._check(entry)
        if entry.name in self and not overwrite:
            raise ValueError(f"{self.family} '{entry.name}' is already registered")
        self[entry.name] = entry
        return entry

    def lookup(self, name: str):
        """The entry registered as `name`; KeyError listing the registered names otherwise."""
        if name not in self:
            raise KeyError(f"{self.family} '{name}' unknown; registered: {sorted(self)}")
        return self[name]
