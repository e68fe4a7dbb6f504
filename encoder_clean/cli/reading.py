"""Reading the encoders a command is given, with one line on stderr about any foreign layout."""

from __future__ import annotations

from encoder_clean.cli.common import err_console
from encoder_clean.encoders.io import LoadedEncoder, load_encoder
from encoder_clean.parallel import world


def open_encoder(source: str, arch: str | None, prefix: str | None) -> LoadedEncoder:
    """`load_encoder` on the CPU, saying on stderr which network was taken from a file in another layout
    (and by which rule) and what was dropped."""
    loaded = load_encoder(source, arch=arch, device="cpu", prefix=prefix)
    if loaded.layout and world().is_main:
        err_console.print(f"{source}: {loaded.layout}", soft_wrap=True, markup=False)
    return loaded
