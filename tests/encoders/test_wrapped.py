"""timm and transformers encoders: tiny random models saved by their own libraries in Hub layouts,
served by the stand-in Hub, read through hf:// and local folders."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from encoder_clean.cli import app
from encoder_clean.encoders.io import load_encoder
from encoder_clean.errors import UserError
from tests.encoders.test_hub import SHA_MAIN, FakeRepo, hub  # noqa: F401,F811  (hub is a fixture)

timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")
runner = CliRunner()
TINY_VIT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32,
                patch_size=4)


def _timm_folder(folder: Path, name: str, **args) -> torch.nn.Module:
    from timm.models import _hub
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=7, **args).eval()
    _hub.save_for_hf(model, str(folder), model_args=args, safe_serialization=True)
    return model


def _transformers_folder(folder: Path, kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind == "clip":  # the whole CLIP checkpoint: the vision tower is read out of it
        config = transformers.CLIPConfig(vision_config=TINY_VIT, text_config=dict(
            hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64))
        transformers.CLIPModel(config).save_pretrained(str(folder))
        return transformers.CLIPVisionModel.from_pretrained(str(folder)).eval()
    model_class, config_class = {"vit": (transformers.ViTModel, transformers.ViTConfig),
                                 "dinov2": (transformers.Dinov2Model, transformers.Dinov2Config),
                                 "clip_vision_model": (transformers.CLIPVisionModel, transformers.CLIPVisionConfig)}[kind]
    model = model_class(config_class(**TINY_VIT)).eval()
    model.save_pretrained(str(folder))
    return model


def _library_features(kind: str, model: torch.nn.Module, normalised: torch.Tensor) -> torch.Tensor:
    """What the library itself gives as the embedding."""
    with torch.no_grad():
        if kind.startswith("timm"):
            return model.forward_head(model.forward_features(normalised), pre_logits=True)
        out = model(pixel_values=normalised)
        return out.last_hidden_state[:, 0] if kind == "vit" else out.pooler_output


MODELS = {
    "timm-resnet": lambda folder: _timm_folder(folder, "resnet10t"),
    "timm-vit": lambda folder: _timm_folder(folder, "vit_tiny_patch16_224", img_size=32, patch_size=4, depth=2,
                                            embed_dim=32, num_heads=2),
    "vit": lambda folder: _transformers_folder(folder, "vit"),
    "dinov2": lambda folder: _transformers_folder(folder, "dinov2"),
    "clip_vision_model": lambda folder: _transformers_folder(folder, "clip_vision_model"),
    "clip": lambda folder: _transformers_folder(folder, "clip"),
}


def _serve(hub, folder: Path, repo: str) -> str:  # noqa: F811
    files = {path.name: path.read_bytes() for path in folder.iterdir() if path.is_file()}
    hub.repos[repo] = FakeRepo(refs={"main": SHA_MAIN}, files={SHA_MAIN: files})
    return f"hf://{repo}"


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_features_equal_the_library_forward_through_the_hub(kind, hub, tmp_path):  # noqa: F811
    folder = tmp_path / kind
    folder.mkdir()
    model = MODELS[kind](folder)
    loaded = load_encoder(_serve(hub, folder, f"owner/{kind.replace('_', '-')}"))
    encoder = loaded.encoder.eval()
    images = torch.rand(2, 3, encoder.image_size, encoder.image_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, taps = encoder.features_with_taps(images, encoder.tap_names)
    torch.testing.assert_close(ours, _library_features(kind, model, encoder.normalize(images)))
    assert taps and all(t.ndim == 4 for t in taps.values())  # ViT tokens come back as patch grids
    assert loaded.sha256 and loaded.encoder.arch.startswith(("timm/", "transformers/"))
    # scan's windows align to patch tokens where there are any (4 px patches in every ViT here)
    assert encoder.token_side == (None if kind == "timm-resnet" else 4)
    # the same folder read locally gives the same encoder
    torch.testing.assert_close(load_encoder(str(folder)).encoder.eval().features(images), ours)


def _library_reload(kind: str, folder: Path) -> torch.nn.Module:
    """The exported folder, read by its own library alone."""
    if kind.startswith("timm"):
        config = json.loads((folder / "config.json").read_text())
        return timm.create_model(config["architecture"], pretrained=True, **config["model_args"],
                                 pretrained_cfg_overlay={"file": str(folder / "model.safetensors")}).eval()
    return transformers.AutoModel.from_pretrained(str(folder)).eval()


def test_commands_run_on_wrapped_models_and_outputs_reload(hub, tmp_path):  # noqa: F811
    data = "builtin?train=64&test=32"
    for kind, library_format in (("timm-vit", "timm"), ("dinov2", "transformers")):
        folder = tmp_path / kind
        folder.mkdir()
        MODELS[kind](folder)
        source = _serve(hub, folder, f"owner/{kind}")
        out = tmp_path / f"{kind}-student.safetensors"
        commands = [
            ["evaluate", source, "--data", data, "--probe-epochs", "2"],
            ["scan", source, "--shadow-images", "16", "--option", "steps=3", "--option", "grid=2"],
            ["purify", source, "--method", "ft", "--data", data, "--clean-fraction", "0.5", "--epochs", "1",
             "--out", str(tmp_path / f"{kind}-ft.safetensors")],
            ["distill", source, "--data", data, "--clean-fraction", "0.5", "--epochs", "1", "--batch-size", "16",
             "--finetune-option", "epochs=1", "-o", "warmup_epochs=1", "--out", str(out)],
        ]
        exported = tmp_path / f"{kind}-student-{library_format}"
        commands.append([*commands[-1][:-2], "--out", str(exported), "--format", library_format])
        for command in commands:
            result = runner.invoke(app, [*command, "--quiet", "--json", "-"])
            assert result.exit_code in (0, 1), (command, result.output)
        student = load_encoder(str(out))
        assert student.encoder.arch == load_encoder(source).encoder.arch
        # a transformer gets the transformer recipe: a copy of the fine-tuned teacher, the feature loss
        assert student.setting("student") == "teacher" and student.setting("losses") == ["sp=1@features"]
        assert student.setting("finetune_settings")["epochs"] == 1  # --finetune-option wins over the recipe's 150
        assert json.loads(student.metadata["model_config"])  # rebuilt without the original folder
        # the same (deterministic) student written in the library's layout loads in the library alone
        encoder = student.encoder.eval()
        images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(_library_features(kind, _library_reload(kind, exported), encoder.normalize(images)),
                                   encoder.features(images))


def test_a_missing_extra_names_what_to_install(tmp_path, monkeypatch):
    folder = tmp_path / "timm-vit"
    folder.mkdir()
    MODELS["timm-vit"](folder)
    real_import = importlib.import_module

    def without_timm(name, *args):
        if name == "timm":
            raise ImportError("no timm")
        return real_import(name, *args)

    monkeypatch.setattr(importlib, "import_module", without_timm)
    with pytest.raises(UserError, match=r"encoder-clean\[timm\]"):
        load_encoder(str(folder))


def test_a_folder_without_a_known_config_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(UserError, match="neither a timm"):
        load_encoder(str(tmp_path))


def test_scan_inverts_at_the_encoder_resolution(tmp_path):
    """A timm ResNet takes 176 px (its pretrained_cfg): the built-in 32 px shadow images are resized and the
    trigger inverted there."""
    folder = tmp_path / "timm-resnet"
    folder.mkdir()
    MODELS["timm-resnet"](folder)
    png = tmp_path / "trigger.png"
    result = runner.invoke(app, ["scan", str(folder), "--shadow-images", "8", "--option", "steps=2", "--option",
                                 "grid=2", "--trigger-out", str(png), "--quiet", "--json", "-"])
    assert result.exit_code in (0, 1), result.output
    from PIL import Image
    with Image.open(png) as image:
        # panels side by side (a stamped shadow image, the stamp, mask and pattern), at the encoder's input size
        side = load_encoder(str(folder)).encoder.image_size
        assert side == 176 and image.size == (4 * side, side)


def test_format_of_another_library_is_refused_before_training(tmp_path):
    from encoder_clean.encoders import create_encoder
    from encoder_clean.encoders.io import save_encoder
    teacher = tmp_path / "resnet.safetensors"
    save_encoder(create_encoder("resnet10-cifar-w8"), teacher, produced_by="test")
    result = runner.invoke(app, ["distill", str(teacher), "--format", "timm", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "needs a timm encoder" in result.stderr
    assert not (tmp_path / "out").exists()
