"""Atomic file writes and hashing: outputs are either complete or absent, never half-written."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable

from encoder_clean.errors import UserError, first_line
from encoder_clean.parallel import world


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call `write(tmp_path)` on a temporary file beside `path`, then rename it over `path` (over the file
    a symlink points to: see `output_target`); returns `path` as given.

    The temporary file lives in the same folder so the final rename is atomic on POSIX file systems.
    In a data-parallel run only rank 0 writes (every rank holds the same result).
    """
    if not world().is_main:
        return Path(path)
    target = output_target(path, "output")
    folder = target.parent
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    except OSError as error:
        raise UserError(f"cannot write {target}: {error.strerror or error}") from None
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, target)
    except BaseException as error:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(error, OSError):  # a full disk, a vanished folder, a quota
            raise UserError(f"cannot write {target}: {error.strerror or error}") from None
        raise
    return Path(path)


# Names that mean "standard output" wherever an output path is taken.
STDOUT_NAMES = ("-", "/dev/stdout")
_SPECIAL_KINDS = ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"),
                  (stat.S_ISSOCK, "a socket"))


def is_stdout(path: str | os.PathLike | None) -> bool:
    return path is not None and os.fspath(path) in STDOUT_NAMES


def output_target(path: str | os.PathLike, flag: str) -> Path:
    """The regular file that writing `path` creates or replaces, checked before any long work.

    A symlink is written through: the file it points to is replaced and the link kept (a dangling link
    creates its target). Folders and special files (devices, FIFOs, sockets) are refused, because the
    atomic rename would put a regular file in their place; so is a read-only file.
    """
    given = Path(path)
    target = Path(os.path.realpath(given)) if given.is_symlink() else given
    subject = f"{given} links to {target}, which" if target != given else f"{given}"
    try:
        mode: int | None = os.stat(target).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as error:  # a symlink loop, a component that is not a folder, no permission
        raise UserError(f"{flag} {given}: {error.strerror or error}") from None
    if mode is not None:
        if stat.S_ISDIR(mode):
            raise UserError(f"{flag} {subject} is a folder, not a file")
        kind = next((name for test, name in _SPECIAL_KINDS if test(mode)), None)
        if kind is not None or not stat.S_ISREG(mode):
            raise UserError(f"{flag} {subject} is {kind or 'not a regular file'}: outputs go to regular files "
                            f"only ('-' writes JSON to standard output)")
        if not os.access(target, os.W_OK):
            raise UserError(f"{flag} {subject} is read-only")
    check_writable_parent(target, flag)
    return target


def check_writable_parent(path: Path, flag: str) -> None:
    """The folder an output goes into exists and is writable (checked before any long work)."""
    folder = path.parent
    if not folder.is_dir():
        raise UserError(f"{flag} {path}: folder {folder} does not exist")
    # Create and remove a file rather than trust os.access: root passes access() on read-only mounts
    # and on /proc, where creating a file fails all the same.
    try:
        fd, probe = tempfile.mkstemp(prefix=".encoder-clean-probe.", dir=folder)
    except OSError as error:
        raise UserError(f"{flag} {path}: folder {folder} is not writable ({error.strerror or error})") from None
    os.close(fd)
    os.unlink(probe)


def check_free_space(folder: str | os.PathLike, needed_bytes: int, what: str) -> None:
    """Fail before long work when `folder`'s file system cannot take `needed_bytes` more."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return  # cannot tell: the write itself will report a full disk
    if free < needed_bytes:
        raise UserError(f"{what}: {folder} has {free / 2**20:.1f} MiB free, the output needs about "
                        f"{needed_bytes / 2**20:.1f} MiB")


def current_umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_json_atomic(path: str | os.PathLike, payload: object) -> Path:
    return write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=False) + "\n")


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_tensors_only(path: str | os.PathLike, what: str) -> Any:
    """`torch.load` with `weights_only=True`: tensors, numbers, strings and plain containers; a pickle that
    would build any other object (and so could run code) is refused. Every failure is one UserError."""
    import torch  # here: fileio is imported by modules that must not pull torch in first

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about pickle protocols it reads fine
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for corrupt or hostile files
        text = str(error)
        if "Unsupported global" in text:
            reason = "it contains Python objects beyond tensors, which are never unpickled"
        elif "Weights only load failed" in text:
            reason = "not a plain pickle of tensors: corrupt, or objects beyond tensors; nothing in it was run"
        elif isinstance(error, EOFError):
            reason = "empty or truncated"
        else:
            reason = first_line(error, 160)
        raise UserError(f"{path}: refused to load as {what} ({reason})") from None
