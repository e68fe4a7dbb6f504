"""Reading pickled checkpoints (`torch.save` files) without running anything in them.

`torch.load(weights_only=True)` builds tensors and plain containers only. Checkpoints also hold other
objects beside the weights: the training arguments (`argparse.Namespace`, built as it is: an attribute
bag), configs (omegaconf's DictConfig in Lightning checkpoints), numpy scalars, or a whole model saved
with `torch.save(model)`. Each of those classes is swapped, by name, for `Opaque` before unpickling: the
class is never imported and none of its code runs; an Opaque keeps the state the pickle hands it, so a
pickled module's parameters stay reachable (`layouts.flatten` reads them). A file that names a function
that would run code (os.system, eval, subprocess, ...) is refused outright.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from encoder_clean.errors import UserError
from encoder_clean.fileio import load_tensors_only

#: modules whose names in a checkpoint can only mean code to run on loading (never data)
CODE_MODULES = frozenset({"os", "posix", "nt", "subprocess", "builtins", "__builtin__", "sys", "importlib", "runpy",
                          "shutil", "socket", "ctypes", "pickle", "_pickle", "marshal", "code", "pty", "webbrowser",
                          "pdb", "timeit", "operator", "functools", "types", "io", "codecs", "multiprocessing"})


class Opaque:
    """Stands in for an object of a class the checkpoint names: built without calling that class."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.pickled_state: Any = None

    def __new__(cls, *args: Any, **kwargs: Any) -> "Opaque":
        instance = super().__new__(cls)
        instance.pickled_state = None
        return instance

    def __setstate__(self, state: Any) -> None:
        self.pickled_state = state[0] if isinstance(state, tuple) and len(state) == 2 and state[1] is None else state


def read_pickled(path: Path) -> object:
    """The contents of a `torch.save` file, with every non-weight object inert (see module docstring)."""
    foreign = [name for name in named_globals(path) if name != "argparse.Namespace"]
    code = [name for name in foreign if name.split(".")[0] in CODE_MODULES]
    if code:
        raise UserError(f"{path}: refused to load as a state dict (it names {code[0]}, which would run code when "
                        f"unpickled; nothing in it was run)")
    with torch.serialization.safe_globals([argparse.Namespace, *((Opaque, name) for name in foreign)]):
        return load_tensors_only(path, "a state dict")


def named_globals(path: Path) -> list[str]:
    """The classes and functions a torch zip checkpoint's pickle names beyond torch's own (read from its
    opcodes, nothing is built); [] for other files, which the weights-only unpickler judges alone."""
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except Exception:  # noqa: BLE001 - not a torch zip file (legacy format, corrupt): torch.load reports it
        return []
