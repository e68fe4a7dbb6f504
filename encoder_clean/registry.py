"""One small name -> item registry shared by every registry of the project: architectures, data formats,
trigger kinds, pre-training methods, attacks, defenses, students, distillation losses, scan methods and
downstream probes."""

from __future__ import annotations

from typing import Generic, TypeVar

from encoder_clean.errors import UserError

Item = TypeVar("Item")


class Registry(Generic[Item]):
    """Items by name; `kind` names them in messages ("unknown defense 'x'; known: ft, fp"), and `flag`, for
    a registry that one CLI option chooses from, names that option ("--probe x: unknown probe; known: ...")."""

    def __init__(self, kind: str, flag: str | None = None):
        self.kind = kind
        self.flag = flag
        self._items: dict[str, Item] = {}

    def register(self, name: str, item: Item) -> Item:
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} registered twice")
        self._items[name] = item
        return item

    def get(self, name: str) -> Item:
        if name not in self._items:
            raise UserError(self._unknown(name))
        return self._items[name]

    def _unknown(self, name: str) -> str:
        known = ", ".join(sorted(self._items))
        if self.flag:
            return f"{self.flag} {name}: unknown {self.kind}; known: {known}"
        return f"unknown {self.kind} {name!r}; known: {known}"

    def items(self) -> dict[str, Item]:
        return dict(sorted(self._items.items()))

    def __contains__(self, name: object) -> bool:
        return name in self._items
