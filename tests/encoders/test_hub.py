"""`hf://` sources against a local stand-in for the Hub (never the real one).

The fake Hub answers what `hf_hub_download` asks: HEAD and GET of `/{repo_id}/resolve/{revision}/{path}`
with `X-Repo-Commit`, `ETag` and `Content-Length`, and 404s carrying the `X-Error-Code` the library turns
into its typed errors. It sends no Xet headers, so the library uses a plain HTTP download.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import torch

from encoder_clean.encoders.hub import CANDIDATE_FILENAMES, HubReference, download, parse_hub_reference
from encoder_clean.encoders.io import load_encoder, save_encoder
from encoder_clean.encoders.registry import create_encoder
from encoder_clean.errors import UserError

ARCH = "resnet10-cifar-w8"
TOKEN = "hf_test_secret"
SHA_MAIN = "a" * 40
SHA_V1 = "b" * 40


# ------------------------------------------------------------------------------------ fake Hub
@dataclass
class FakeRepo:
    refs: dict[str, str]  # branch or tag -> commit sha
    files: dict[str, dict[str, bytes]]  # commit sha -> path -> content
    token: str | None = None  # private: only this bearer token may read it
    gated: bool = False


@dataclass
class FakeHub:
    endpoint: str = ""
    repos: dict[str, FakeRepo] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    def gets(self) -> int:
        return sum(1 for method, path in self.requests if method == "GET" and "/resolve/" in path)

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


def _answer(hub: FakeHub, method: str, raw_path: str, authorization: str | None
            ) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body for one request, as the Hub would answer it."""
    parts = urlsplit(raw_path).path.lstrip("/").split("/")
    if len(parts) < 5 or parts[2] != "resolve":
        return 404, {}, b""  # e.g. /api/agent-harnesses: nothing to say, the library copes
    repo_id, revision, path = f"{parts[0]}/{parts[1]}", unquote(parts[3]), unquote("/".join(parts[4:]))
    repo = hub.repos.get(repo_id)
    if repo is None or (repo.token and authorization != f"Bearer {repo.token}"):
        return 404, {"X-Error-Code": "RepoNotFound"}, b""
    if repo.gated:
        return 403, {"X-Error-Code": "GatedRepo", "X-Error-Message": "Access to this repo is restricted"}, b""
    sha = repo.refs.get(revision) or (revision if revision in repo.files else None)
    if sha is None:
        return 404, {"X-Error-Code": "RevisionNotFound"}, b""
    content = repo.files[sha].get(path)
    if content is None:
        return 404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": sha}, b""
    headers = {"X-Repo-Commit": sha, "ETag": f'"{hashlib.sha256(content).hexdigest()}"',
               "Content-Length": str(len(content)), "Content-Type": "application/octet-stream"}
    return 200, headers, content if method == "GET" else b""


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _reply(self, method: str) -> None:
            hub.requests.append((method, self.path))
            status, headers, body = _answer(hub, method, self.path, self.headers.get("Authorization"))
            self.send_response(status)
            headers.setdefault("Content-Length", str(len(body)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            if body:
                self.wfile.write(body)

        def do_HEAD(self) -> None:  # noqa: N802 (http.server's naming)
            self._reply("HEAD")

        def do_GET(self) -> None:  # noqa: N802
            self._reply("GET")

        def log_message(self, *args) -> None:  # keep test output clean
            pass

    return Handler


def _patch_hub_settings(monkeypatch: pytest.MonkeyPatch, endpoint: str, home: Path) -> None:
    """Point huggingface_hub at the fake Hub and a private cache.

    The environment variables alone are not enough: huggingface_hub reads them into `constants` when it is
    first imported (the endpoint even into a URL template), so the constants are patched too.
    """
    import huggingface_hub
    from huggingface_hub import constants

    env = {"HF_ENDPOINT": endpoint, "HF_HOME": str(home), "HF_HUB_CACHE": str(home / "hub"),
           "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
           "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN",
                "HF_OIDC_RESOURCE", "HF_HUB_DISABLE_IMPLICIT_TOKEN", "HUGGINGFACE_CO_STAGING"):
        monkeypatch.delenv(key, raising=False)
    settings = {
        "ENDPOINT": endpoint,
        "HUGGINGFACE_CO_URL_TEMPLATE": endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HOME": str(home), "HF_HUB_CACHE": str(home / "hub"), "HUGGINGFACE_HUB_CACHE": str(home / "hub"),
        "HF_ASSETS_CACHE": str(home / "assets"), "HF_XET_CACHE": str(home / "xet"),
        "HF_TOKEN_PATH": str(home / "token"), "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
        "AGENT_HARNESSES_PATH": str(home / "agent_harnesses.json"),
        "HF_HUB_OFFLINE": False, "HF_HUB_DISABLE_TELEMETRY": True, "HF_HUB_DISABLE_IMPLICIT_TOKEN": False,
    }
    for name, value in settings.items():
        if hasattr(constants, name):  # older versions lack some of these
            monkeypatch.setattr(constants, name, value)
    # The shared HTTP client read the proxy settings when it was made; a fresh one sees NO_PROXY.
    huggingface_hub.close_session()


def set_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    fake = FakeHub()
    fake.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    fake.server.daemon_threads = True
    fake.endpoint = f"http://127.0.0.1:{fake.server.server_address[1]}"
    thread = threading.Thread(target=fake.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    _patch_hub_settings(monkeypatch, fake.endpoint, tmp_path / "hf_home")
    yield fake
    fake.stop()
    thread.join(timeout=5)
    import huggingface_hub

    huggingface_hub.close_session()


# ------------------------------------------------------------------------------------ encoders
def make_encoder(seed: int):
    torch.manual_seed(seed)
    return create_encoder(ARCH).eval()


def safetensors_bytes(encoder, tmp_path: Path, name: str) -> bytes:
    path = tmp_path / f"{name}.safetensors"
    save_encoder(encoder, path, produced_by="test")
    return path.read_bytes()


def badencoder_bytes(encoder, tmp_path: Path) -> bytes:
    """The encoder as a BadEncoder-release checkpoint: Sequential backbone under `f.f.`, head under `g.`."""
    index = {"conv1": 0, "bn1": 1, "layer1": 3, "layer2": 4, "layer3": 5, "layer4": 6}
    state = {}
    for key, value in encoder.state_dict().items():
        top, _, rest = key.partition(".")
        if top == "head":
            state["g." + rest.removeprefix("layers.")] = value.clone()
        else:
            state[f"f.f.{index[top]}.{rest}"] = value.clone()
    path = tmp_path / "badencoder.pth"
    torch.save({"epoch": 200, "state_dict": state}, path)
    return path.read_bytes()


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    return torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(7))


def features(encoder, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return encoder.eval().features(images)


@pytest.fixture
def two_encoders(hub: FakeHub, tmp_path: Path):
    """owner/repo: `main` and tag `v1` hold different encoders; `main` also has one under sub/dir/."""
    main, v1 = make_encoder(0), make_encoder(1)
    main_bytes, v1_bytes = safetensors_bytes(main, tmp_path, "main"), safetensors_bytes(v1, tmp_path, "v1")
    hub.repos["owner/repo"] = FakeRepo(
        refs={"main": SHA_MAIN, "v1": SHA_V1},
        files={SHA_MAIN: {"model.safetensors": main_bytes, "sub/dir/enc.safetensors": main_bytes},
               SHA_V1: {"model.safetensors": v1_bytes}})
    return main, v1


# ------------------------------------------------------------------------------------ parsing
@pytest.mark.parametrize("source, expected", [
    ("hf://owner/repo", HubReference("owner/repo", None, None)),
    ("hf://owner/repo@v1", HubReference("owner/repo", None, "v1")),
    ("hf://owner/repo/enc.safetensors", HubReference("owner/repo", "enc.safetensors", None)),
    ("hf://o-1/r_2.x/sub/dir/enc.safetensors@main",
     HubReference("o-1/r_2.x", "sub/dir/enc.safetensors", "main")),
    ("hf://owner/repo@refs/pr/3", HubReference("owner/repo", None, "refs/pr/3")),
    ("hf://owner/repo/a@b.pt@" + SHA_V1, HubReference("owner/repo", "a@b.pt", SHA_V1)),
])
def test_parse_hub_reference(source, expected):
    assert parse_hub_reference(source) == expected


@pytest.mark.parametrize("source", [
    "hf://", "hf://owner", "hf://owner/", "hf:///repo", "hf://owner/repo@", "hf://owner//x.pt",
    "hf://owner/repo/", "hf://owner/repo/../x.pt", "hf://own er/repo", "hf://owner/re--po",
    "hf://owner/repo@bad rev", "hf://datasets/owner/repo", "owner/repo", "hf://-owner/repo",
])
def test_parse_hub_reference_rejects_malformed(source):
    with pytest.raises(UserError) as caught:
        parse_hub_reference(source)
    assert source in str(caught.value) and "\n" not in str(caught.value)


# ------------------------------------------------------------------------------------ downloads
def test_revisions_give_their_own_encoders(hub, two_encoders, batch):
    main, v1 = two_encoders
    at_main = load_encoder("hf://owner/repo").encoder
    at_v1 = load_encoder("hf://owner/repo@v1").encoder
    assert torch.allclose(features(at_main, batch), features(main, batch), atol=1e-6)
    assert torch.allclose(features(at_v1, batch), features(v1, batch), atol=1e-6)
    assert not torch.allclose(features(at_main, batch), features(at_v1, batch))


def test_explicit_path_and_commit_sha(hub, two_encoders, batch):
    main, v1 = two_encoders
    loaded = load_encoder("hf://owner/repo/sub/dir/enc.safetensors@main")
    assert loaded.path.name == "enc.safetensors"
    assert torch.allclose(features(loaded.encoder, batch), features(main, batch), atol=1e-6)
    pinned = load_encoder(f"hf://owner/repo@{SHA_V1}").encoder
    assert torch.allclose(features(pinned, batch), features(v1, batch), atol=1e-6)


def test_second_load_comes_from_the_cache(hub, two_encoders, tmp_path, batch):
    main, _ = two_encoders
    first = load_encoder("hf://owner/repo")
    assert hub.gets() == 1
    assert (tmp_path / "hf_home" / "hub") in first.path.parents  # the cache the settings name
    load_encoder("hf://owner/repo")
    assert hub.gets() == 1  # asked again (HEAD) but not downloaded again
    hub.stop()
    again = load_encoder("hf://owner/repo")  # Hub unreachable: the cached copy of `main` is used
    assert again.sha256 == first.sha256
    assert torch.allclose(features(again.encoder, batch), features(main, batch), atol=1e-6)


def test_offline_mode_uses_the_cache_and_sends_nothing(hub, two_encoders, monkeypatch):
    first = load_encoder("hf://owner/repo@v1")
    seen = len(hub.requests)
    set_offline(monkeypatch)
    assert load_encoder("hf://owner/repo@v1").sha256 == first.sha256
    assert len(hub.requests) == seen


def test_badencoder_bin_loads_with_arch_inferred(hub, tmp_path, batch, monkeypatch):
    encoder = make_encoder(3)
    checkpoint = badencoder_bytes(encoder, tmp_path)
    files = {SHA_MAIN: {"pytorch_model.bin": checkpoint}}
    hub.repos["lab/badencoder"] = FakeRepo(refs={"main": SHA_MAIN}, files=files)
    loaded = load_encoder("hf://lab/badencoder")
    assert loaded.path.name == "pytorch_model.bin"
    assert loaded.encoder.arch == ARCH and loaded.has_pretrained_head
    assert torch.allclose(features(loaded.encoder, batch), features(encoder, batch), atol=1e-6)
    set_offline(monkeypatch)  # offline, the candidates not in the cache are skipped
    assert load_encoder("hf://lab/badencoder").sha256 == loaded.sha256


def test_private_repo_needs_the_token(hub, two_encoders, monkeypatch):
    hub.repos["owner/private"] = FakeRepo(refs={"main": SHA_MAIN},
                                          files=hub.repos["owner/repo"].files, token=TOKEN)
    with pytest.raises(UserError, match="hf://owner/private: repository owner/private not found"):
        download("hf://owner/private")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert download("hf://owner/private").name == "model.safetensors"


# ------------------------------------------------------------------------------------ errors
def one_line_error(source: str) -> str:
    with pytest.raises(UserError) as caught:
        download(source)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(source + ": ")
    return message


def test_missing_repo(hub, two_encoders):
    assert "repository owner/nothing not found" in one_line_error("hf://owner/nothing")


def test_missing_revision(hub, two_encoders):
    assert one_line_error("hf://owner/repo@v2") == "hf://owner/repo@v2: revision v2 not found in owner/repo"


def test_missing_file(hub, two_encoders):
    message = one_line_error("hf://owner/repo/nope.safetensors@v1")
    assert "file nope.safetensors not found in owner/repo at revision v1" in message


def test_no_candidate_file(hub):
    hub.repos["owner/empty"] = FakeRepo(refs={"main": SHA_MAIN}, files={SHA_MAIN: {"README.md": b"hi"}})
    message = one_line_error("hf://owner/empty")
    assert "no encoder file" in message and all(name in message for name in CANDIDATE_FILENAMES)


def test_gated_repo(hub):
    hub.repos["owner/gated"] = FakeRepo(refs={"main": SHA_MAIN}, files={SHA_MAIN: {}}, gated=True)
    assert "gated" in one_line_error("hf://owner/gated")


def test_offline_and_not_cached(hub, two_encoders, monkeypatch):
    set_offline(monkeypatch)
    assert "HF_HUB_OFFLINE" in one_line_error("hf://owner/repo")
    assert "HF_HUB_OFFLINE" in one_line_error("hf://owner/repo/model.safetensors@v1")
    assert hub.gets() == 0


def test_unreachable_and_not_cached(hub, two_encoders, monkeypatch):
    hub.stop()
    # huggingface_hub retries connection errors with back-off before giving up; skip the waiting.
    import huggingface_hub.utils._http as hub_http

    monkeypatch.setattr(hub_http.time, "sleep", lambda seconds: None)
    assert "could not be reached" in one_line_error("hf://owner/repo")
