"""`encoder-clean inspect`: what a checkpoint holds, on our own files, on every public layout and on
hostile files, never with a traceback and never running anything but weights."""

from __future__ import annotations

import json
import random

import pytest
import torch
from typer.testing import CliRunner

from encoder_clean.cli import app
from encoder_clean.encoders import create_encoder
from encoder_clean.encoders.io import save_encoder
from tests.cli.test_cli import ARCH
from tests.encoders.test_hub import SHA_MAIN, FakeRepo, hub  # noqa: F401  (hub: a stand-in Hub on localhost)
from tests.encoders.test_layouts import LAYOUTS, SMALL, moco_v2_small, backbone_state, layout_file, resnet
from tests.hostile.cases import MARKER_NAME, byte_cases, encoder_bytes, structured_cases

runner = CliRunner()


def _inspect(*args: str):
    result = runner.invoke(app, ["inspect", *args], env={"COLUMNS": "250"})
    # anything but a clean exit would reach a user as a traceback
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def test_inspect_our_checkpoint_shows_architecture_and_provenance(tmp_path):
    path = tmp_path / "poisoned.safetensors"
    torch.manual_seed(0)
    encoder = create_encoder(ARCH)
    sha = save_encoder(encoder, path, produced_by="encoder-clean test poison", parent_sha256="ab" * 32,
                       settings={"attack": "badencoder", "target_class": 3})
    result = _inspect(str(path), "--json", "-")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["sha256"] == sha and report["format"] == "safetensors"
    assert report["arch"] == ARCH and report["recognised_by"] == "the file's metadata" and report["layout"] is None
    assert report["image_size"] == 32 and report["feature_dim"] == encoder.feature_dim
    assert report["taps"] == ["layer1", "layer2", "layer3", "layer4"]
    assert report["parameters"] == sum(p.numel() for n, p in encoder.named_parameters() if not n.startswith("head."))
    assert report["provenance"]["parent_sha256"] == "ab" * 32
    assert report["provenance"]["produced_by"] == "encoder-clean test poison"
    assert report["settings"] == {"attack": "badencoder", "target_class": 3}
    assert report["projection_head"].startswith("pretrained") and report["error"] is None
    human = _inspect(str(path))
    assert human.exit_code == 0 and sha in human.stdout and "badencoder" in human.stdout


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_inspect_reads_every_public_layout(name):
    path, _, _ = layout_file(name)
    result = _inspect(str(path), "--json", "-")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["recognised_by"] == "its parameter names and shapes"
    assert report["layout"].startswith(f"took {LAYOUTS[name][2]} as {report['arch']}"), report["layout"]
    assert report["format"].startswith("PyTorch pickle") and report["feature_dim"] > 0
    if name.startswith("dino-full"):  # the training arguments DINO saves beside the weights
        assert report["pickled_classes"] == ["argparse.Namespace"]


def test_inspect_names_the_candidates_of_an_ambiguous_file(tmp_path):
    path = tmp_path / "two.pth"
    torch.save({"net_a": backbone_state(resnet(0)), "net_b": backbone_state(resnet(1))}, path)
    result = _inspect(str(path))
    assert result.exit_code == 2 and "cannot load" in result.stdout
    assert "net_a" in result.stderr and "net_b" in result.stderr and "--prefix" in result.stderr
    picked = _inspect(str(path), "--prefix", "net_a", "--json", "-")
    assert picked.exit_code == 0 and json.loads(picked.stdout)["layout"].startswith("took net_a as resnet18")


def test_inspect_never_gives_a_traceback_on_hostile_files(tmp_path):
    rng = random.Random(0)
    cases = [case for case in structured_cases(rng) if case.loader in ("safetensors", "pt")]
    for kind in ("safetensors", "pt"):
        cases += byte_cases(kind, f".{kind}", lambda kind=kind: encoder_bytes(kind), 10, rng)
    codes = []
    for index, case in enumerate(cases):
        folder = tmp_path / f"case{index}" / "in"
        folder.mkdir(parents=True)
        result = _inspect(case.write(folder))
        assert result.exit_code in (0, 2), (case.name, result.output)
        if result.exit_code == 2:
            lines = [line for line in result.stderr.splitlines() if line.strip()]
            assert len(lines) == 1 and lines[0].startswith("error:"), (case.name, result.stderr)
        assert not (folder.parent / MARKER_NAME).exists() and not (folder / MARKER_NAME).exists(), case.name
        codes.append(result.exit_code)
    assert codes.count(2) > 50 and 0 in codes


@pytest.mark.parametrize("missing", ["absent.safetensors", "hf://owner/../x"])
def test_inspect_of_nothing_is_one_line(tmp_path, missing):
    result = _inspect(str(tmp_path / missing) if not missing.startswith("hf") else missing)
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1


def test_inspect_a_hub_file_and_a_hub_model_folder(hub, tmp_path):  # noqa: F811
    """hf:// references go through huggingface_hub like every command's; a timm folder is recognised by its
    config.json."""
    moco_v2_small(tmp_path / "moco.pth")
    hub.repos["owner/moco"] = FakeRepo(refs={"main": SHA_MAIN},
                                       files={SHA_MAIN: {"ckpt/moco.pth": (tmp_path / "moco.pth").read_bytes()}})
    result = _inspect("hf://owner/moco/ckpt/moco.pth", "--json", "-")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["arch"] == SMALL and report["layout"].startswith("took state_dict.module.encoder_q")
    timm = pytest.importorskip("timm")
    from timm.models import _hub

    folder = tmp_path / "vit"
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=32, patch_size=8,
                              embed_dim=64, depth=2, num_heads=2)
    _hub.save_for_hf(model, str(folder), model_args=dict(img_size=32, patch_size=8, embed_dim=64, depth=2,
                                                         num_heads=2), safe_serialization=True)
    files = {path.name: path.read_bytes() for path in folder.iterdir() if path.is_file()}
    hub.repos["owner/vit"] = FakeRepo(refs={"main": SHA_MAIN}, files={SHA_MAIN: files})
    report = json.loads(_inspect("hf://owner/vit", "--json", "-").stdout)
    assert report["format"] == "timm model folder" and report["recognised_by"] == "the folder's config.json"
    assert report["arch"] == "timm/vit_tiny_patch16_224" and report["taps"][:2] == ["blocks.0", "blocks.1"]
    assert report["parameters"] == sum(p.numel() for p in model.parameters())
