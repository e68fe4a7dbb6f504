"""Fetch encoder files from the Hugging Face Hub: `hf://OWNER/REPO[/PATH/IN/REPO][@REVISION]`.

Downloads go through `huggingface_hub.hf_hub_download`, so its cache and the usual environment variables
(`HF_HUB_OFFLINE`, `HF_ENDPOINT`, `HF_HOME`/`HF_HUB_CACHE`, `HF_TOKEN`) behave as users expect. Every
failure becomes a one-line `UserError` naming the reference. huggingface_hub is imported inside the
functions that need it, so commands that never touch the Hub do not pay for importing it.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from encoder_clean import __version__
from encoder_clean.errors import UserError, first_line

SCHEME = "hf://"
DEFAULT_REVISION = "main"
#: Tried in this order when a reference names no file; the first one the repository holds is used.
CANDIDATE_FILENAMES = ("model.safetensors", "encoder.safetensors", "pytorch_model.bin", "model.pt",
                       "model.pth")
FORM = "hf://OWNER/REPO[/PATH/IN/REPO][@REVISION]"

# The Hub's own naming rule for owners and repositories (letters, digits, '-', '_', '.').
_NAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?")
# `hf://datasets/...` and friends name other repository types, which hold no encoders.
_OTHER_REPO_TYPES = ("datasets", "spaces", "buckets", "kernels")


@dataclass(frozen=True)
class HubReference:
    repo_id: str
    path_in_repo: str | None = None
    revision: str | None = None

    @property
    def revision_or_default(self) -> str:
        return self.revision or DEFAULT_REVISION


# ------------------------------------------------------------------------------------ parsing
def parse_hub_reference(source: str) -> HubReference:
    """Split `hf://OWNER/REPO[/PATH/IN/REPO][@REVISION]`; the revision follows the last '@'."""
    if not source.startswith(SCHEME):
        raise UserError(f"{source}: not a Hub reference; expected {FORM}")
    body, revision = source[len(SCHEME):], None
    if "@" in body:
        body, _, revision = body.rpartition("@")
        _check_revision(source, revision)
    segments = body.split("/")
    if len(segments) < 2 or "" in segments:
        raise UserError(f"{source}: malformed Hub reference; expected {FORM}")
    owner, name, path = segments[0], segments[1], segments[2:]
    _check_repo_id(source, owner, name)
    _check_path(source, path)
    return HubReference(f"{owner}/{name}", "/".join(path) or None, revision)


def _check_revision(source: str, revision: str) -> None:
    if not revision:
        raise UserError(f"{source}: empty revision after '@'; expected {FORM}")
    if any(ch.isspace() for ch in revision) or ".." in revision:
        raise UserError(f"{source}: invalid revision {revision!r}")


def _check_repo_id(source: str, owner: str, name: str) -> None:
    if owner in _OTHER_REPO_TYPES:
        raise UserError(f"{source}: only model repositories are supported, not {owner}")
    for part in (owner, name):
        if not _NAME.fullmatch(part) or "--" in part or ".." in part:
            raise UserError(f"{source}: invalid repository name {part!r}")
    if len(owner) + 1 + len(name) > 96:
        raise UserError(f"{source}: repository id is longer than 96 characters")


def _check_path(source: str, path: list[str]) -> None:
    # '.' and '..' would let a reference point outside the repository (and the cache).
    if any(part in (".", "..") or "\\" in part for part in path):
        raise UserError(f"{source}: invalid path in repository {'/'.join(path)!r}")


# ------------------------------------------------------------------------------------ download
class _Missing(Exception):
    """A candidate file is absent: remotely, or (offline) from the cache."""

    def __init__(self, offline: bool):
        super().__init__()
        self.offline = offline


def download(source: str) -> Path:
    """Local path (in the huggingface_hub cache) of the file that `source` refers to."""
    ref = parse_hub_reference(source)
    if ref.path_in_repo:
        try:
            return _fetch(source, ref, ref.path_in_repo)
        except _Missing as missing:
            raise UserError(_missing_message(source, ref, ref.path_in_repo, missing.offline)) from None
    folder = _model_folder(source, ref)
    if folder is not None:
        return folder
    offline = False
    for filename in CANDIDATE_FILENAMES:
        try:
            return _fetch(source, ref, filename)
        except _Missing as missing:
            offline = offline or missing.offline
    raise UserError(_no_candidate_message(source, ref, offline))


def _model_folder(source: str, ref: HubReference) -> Path | None:
    """A timm or transformers repository (it has config.json): fetch its config, first weight file and
    preprocessing config into the cache, and return the snapshot folder; None for other repositories."""
    from encoder_clean.encoders.folders import CONFIG, OPTIONAL_FILES, WEIGHT_FILES

    try:
        config = _fetch(source, ref, CONFIG)
    except _Missing:
        return None
    except UserError:  # e.g. the Hub is unreachable and no config is cached: the single-file candidates
        return None    # may still be in the cache, and report the failure themselves if not
    for filename in WEIGHT_FILES:
        try:
            _fetch(source, ref, filename)
            break
        except _Missing:
            continue
    else:
        raise UserError(f"{source}: {ref.repo_id} has {CONFIG} but none of {', '.join(WEIGHT_FILES)}")
    for filename in OPTIONAL_FILES:
        try:
            _fetch(source, ref, filename)
        except _Missing:
            pass
    return config.parent


def _fetch(source: str, ref: HubReference, filename: str) -> Path:
    from huggingface_hub import hf_hub_download

    try:
        local = hf_hub_download(ref.repo_id, filename, revision=ref.revision, repo_type="model",
                                library_name="encoder-clean", library_version=__version__)
    except Exception as error:  # mapped below; anything not recognised there is re-raised as a bug
        _raise_mapped(source, ref, error)
    return Path(local)


def _raise_mapped(source: str, ref: HubReference, error: Exception) -> NoReturn:
    """Raise `_Missing` for an absent file, a one-line UserError for other known failures."""
    from huggingface_hub.utils import (EntryNotFoundError, GatedRepoError, HfHubHTTPError,
                                       LocalEntryNotFoundError, RepositoryNotFoundError,
                                       RevisionNotFoundError)

    # Order matters: the classes nest (gated < not found < HTTP error < OSError; local < entry).
    if isinstance(error, LocalEntryNotFoundError):
        if _offline_cause(error):
            raise _Missing(offline=True) from None
        raise UserError(f"{source}: {_unreachable_message(error)}") from None
    if isinstance(error, EntryNotFoundError):
        raise _Missing(offline=False) from None
    if isinstance(error, GatedRepoError):
        message = (f"repository {ref.repo_id} is gated; accept its conditions on the Hub and set HF_TOKEN "
                   "(or run `hf auth login`)")
    elif isinstance(error, RepositoryNotFoundError):
        message = (f"repository {ref.repo_id} not found (if it is private or gated, set HF_TOKEN "
                   "or run `hf auth login`)")
    elif isinstance(error, RevisionNotFoundError):
        message = f"revision {ref.revision_or_default} not found in {ref.repo_id}"
    elif isinstance(error, HfHubHTTPError):
        message = _http_message(error)
    elif isinstance(error, (OSError, ValueError)) or isinstance(error, _network_errors()):
        # OSError: disk full, size mismatch, missing metadata headers; ValueError: invalid names.
        message = f"download failed ({first_line(error)})"
    else:
        raise error
    raise UserError(f"{source}: {message}") from None


def _offline_cause(error: BaseException) -> bool:
    from huggingface_hub.utils import OfflineModeIsEnabled

    return isinstance(error.__cause__, OfflineModeIsEnabled) or _offline_mode()


def _offline_mode() -> bool:
    from huggingface_hub import constants

    return bool(getattr(constants, "HF_HUB_OFFLINE", False))


def _unreachable_message(error: BaseException) -> str:
    """The Hub could not be asked and the file is not cached: say why, from the chained cause."""
    from huggingface_hub.utils import HfHubHTTPError

    cause = error.__cause__
    if isinstance(cause, HfHubHTTPError):
        return f"not in the local cache, and the Hub answered: {_http_message(cause)}"
    reason = first_line(cause) if cause is not None else "network unavailable"
    return f"not in the local cache, and the Hub at {_endpoint()} could not be reached ({reason})"


def _http_message(error: BaseException) -> str:
    response = getattr(error, "response", None)
    status = getattr(response, "status_code", None)
    if status == 401:
        return "HTTP 401 unauthorised: the Hub refused the token; check HF_TOKEN or run `hf auth login`"
    if status == 403:
        return "HTTP 403 forbidden: the token lacks access to this repository"
    return f"Hub request failed ({f'HTTP {status}' if status else first_line(error)})"


def _missing_message(source: str, ref: HubReference, filename: str, offline: bool) -> str:
    if offline:
        return f"{source}: not in the local cache, and HF_HUB_OFFLINE is set"
    return f"{source}: file {filename} not found in {ref.repo_id} at revision {ref.revision_or_default}"


def _no_candidate_message(source: str, ref: HubReference, offline: bool) -> str:
    tried = ", ".join(CANDIDATE_FILENAMES)
    if offline:
        return f"{source}: none of {tried} is in the local cache, and HF_HUB_OFFLINE is set"
    return (f"{source}: no encoder file in {ref.repo_id} at revision {ref.revision_or_default} "
            f"(tried {tried}); name the file as hf://{ref.repo_id}/PATH")


def _network_errors() -> tuple[type[BaseException], ...]:
    """Base exception classes of the HTTP clients huggingface_hub versions use (httpx2, httpx, requests)."""
    found = []
    for module, name in (("httpx2", "HTTPError"), ("httpx", "HTTPError"), ("requests", "RequestException")):
        try:
            found.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(found)


def _endpoint() -> str:
    from huggingface_hub import constants

    return str(getattr(constants, "ENDPOINT", "the Hub"))

