"""One small name -> item registry shared by every registry of the project: architectures, data formats,
trigger kinds, pre-training methods, attacks, defenses, students and distillation losses."""

from __future__ import annotations

from typing import Generic, TypeVar

from encoder_clean.errors import UserError

Item = TypeVar("Item")


class Registry(Generic[Item]):
    """Items by name; `kind` names them in messages ("unknown defense 'x'; known: ft, fp")."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, Item] = {}

    def register(self, name: str, item: Item) -> Item:
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} registered twice")
        self._items[name] = item
        return item

    def get(self, name: str) -> Item:
        if name not in self._items:
            raise UserError(f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self._items))}")
        return self._items[name]

    def items(self) -> dict[str, Item]:
        return dict(sorted(self._items.items()))

    def __contains__(self, name: object) -> bool:
        return name in self._items
