"""The checkpoint layouts people download load to the reference model's features.

Each layout is built here from the key names its authors' code writes (random weights, no downloads):
a torchvision ResNet-18 or a small timm ViT wrapped the way MoCo v2/v3, DINO, SwAV, solo-learn, the BYOL
packages, Barlow Twins/VICReg, the SimCLR converters, lightly and OpenCLIP save them.
"""

from __future__ import annotations

import argparse
import atexit
import functools
import json
import shutil
import tempfile
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from encoder_clean.encoders.io import load_encoder
from encoder_clean.encoders.layouts import find_backbone
from encoder_clean.errors import UserError

timm = pytest.importorskip("timm")
IMAGENET = (torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
CLIP = (torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1),
        torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1))


# ------------------------------------------------------------------------------ reference models
def _randomise(model: nn.Module, seed: int) -> nn.Module:
    """Random weights, BatchNorm statistics included, so that two networks never agree by accident."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, value in model.state_dict().items():
            if not value.is_floating_point():
                continue
            if name.endswith(("running_var", "bn1.weight", "bn2.weight", "bn3.weight", "1.weight")) and value.dim() == 1:
                value.copy_(0.5 + torch.rand(value.shape, generator=generator))
            elif value.dim() == 1:
                value.copy_(0.1 * torch.randn(value.shape, generator=generator))
            else:
                value.copy_(torch.randn(value.shape, generator=generator) * (2 / value[0].numel()) ** 0.5)
    return model.eval()


def resnet(seed: int, depth: int = 18) -> nn.Module:
    return _randomise(getattr(torchvision.models, f"resnet{depth}")(), seed)


def vit(seed: int, clip: bool = False) -> nn.Module:
    name = "vit_base_patch32_clip_224" if clip else "vit_tiny_patch16_224"
    model = timm.create_model(name, pretrained=False, num_classes=0, img_size=32, patch_size=8, embed_dim=64,
                              depth=2, num_heads=1)
    return _randomise(model, seed)


def backbone_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The backbone without its classifier, as DINO, Barlow Twins and VICReg release it."""
    return {k: v.clone() for k, v in model.state_dict().items() if not k.startswith(("fc.", "head."))}


def prefixed(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in state.items()}


def mlp(prefix: str, dims: list[int], bn: bool = True, bias: bool = True, seed: int = 0) -> dict[str, torch.Tensor]:
    """An nn.Sequential MLP head's keys (Linear [BN] ReLU ... Linear) under `prefix`."""
    generator = torch.Generator().manual_seed(seed)
    state, index = {}, 0
    for i, (a, b) in enumerate(zip(dims, dims[1:])):
        state[f"{prefix}{index}.weight"] = torch.randn(b, a, generator=generator)
        if bias:
            state[f"{prefix}{index}.bias"] = torch.zeros(b)
        index += 1
        if i < len(dims) - 2:
            if bn:
                state.update({f"{prefix}{index}.weight": torch.ones(b), f"{prefix}{index}.bias": torch.zeros(b),
                              f"{prefix}{index}.running_mean": torch.zeros(b), f"{prefix}{index}.running_var": torch.ones(b),
                              f"{prefix}{index}.num_batches_tracked": torch.tensor(0)})
                index += 1
            index += 1  # ReLU
    return state


def sequential_children(model: nn.Module, skip_maxpool: bool = False) -> dict[str, torch.Tensor]:
    """`nn.Sequential(*list(resnet.children())[:-1])`'s keys (lightly, PyTorch-BYOL; SimCLR drops max-pool)."""
    children = [c for name, c in model.named_children() if name != "fc" and not (skip_maxpool and name == "maxpool")]
    return {k: v.clone() for k, v in nn.Sequential(*children).state_dict().items()}


# ------------------------------------------------------------------------------ the layouts
def moco_v2(a, b):
    return {"epoch": 200, "arch": "resnet18", "optimizer": {"state": {}, "param_groups": []},
            "state_dict": {**prefixed({**backbone_state(a), **mlp("fc.", [512, 512, 128], bn=False)}, "module.encoder_q."),
                           **prefixed({**backbone_state(b), **mlp("fc.", [512, 512, 128], bn=False, seed=1)},
                                      "module.encoder_k."),
                           "module.queue": torch.randn(128, 64), "module.queue_ptr": torch.zeros(1, dtype=torch.long)}}


def moco_v3(a, b):
    head = mlp("head." if _is_vit(a) else "fc.", [64 if _is_vit(a) else 512, 96, 32], bias=False)
    return {"epoch": 100, "arch": "vit_small" if _is_vit(a) else "resnet50", "scaler": {"scale": 1024.0},
            "state_dict": {**prefixed({**backbone_state(a), **head}, "module.base_encoder."),
                           **prefixed({**backbone_state(b), **head}, "module.momentum_encoder."),
                           **mlp("module.predictor.", [32, 96, 32], bias=False)}}


def _is_vit(model) -> bool:
    return isinstance(model, timm.models.VisionTransformer)


def dino_full(a, b):
    dim = 64 if _is_vit(a) else 512
    head = {**mlp("head.mlp.", [dim, 128, 128, 32], bn=False), "head.last_layer.weight_g": torch.ones(100, 1),
            "head.last_layer.weight_v": torch.randn(100, 32)}
    return {"student": prefixed({**prefixed(backbone_state(b), "backbone."), **head}, "module."),
            "teacher": {**prefixed(backbone_state(a), "backbone."), **head},
            "optimizer": {"state": {}, "param_groups": []}, "epoch": 100,
            "args": argparse.Namespace(arch="resnet18", out_dim=100, lr=0.0005),
            "dino_loss": {"center": torch.zeros(1, 100)}}


def swav(a, b):
    return prefixed({**backbone_state(a), **mlp("projection_head.", [512, 256, 128]),
                     "prototypes.weight": torch.randn(300, 128)}, "module.")


def solo_learn_simclr(a, b):
    return {"epoch": 99, "global_step": 1000, "pytorch-lightning_version": "2.0.0",
            "state_dict": {**prefixed(backbone_state(a), "backbone."), "projector.weight": torch.randn(128, 512),
                           "projector.bias": torch.zeros(128), "classifier.weight": torch.randn(10, 512),
                           "classifier.bias": torch.zeros(10)},
            "hyper_parameters": {"cfg": {"method": "simclr"}}, "optimizer_states": [], "lr_schedulers": []}


def solo_learn_byol(a, b):
    projector = mlp("projector.", [512, 256, 64])
    return {"epoch": 99, "state_dict": {
        **prefixed(backbone_state(a), "backbone."), **projector, **mlp("predictor.", [64, 256, 64]),
        **prefixed(backbone_state(b), "momentum_backbone."), **{"momentum_" + k: v for k, v in projector.items()},
        "classifier.weight": torch.randn(10, 512), "classifier.bias": torch.zeros(10)}}


def byol_pytorch(a, b):
    """lucidrains/byol-pytorch: `net` is also the online encoder's `net`; the target is a copy."""
    projector = mlp("projector.net.", [512, 256, 64])
    return {**prefixed(backbone_state(a), "net."),
            **prefixed({**prefixed(backbone_state(a), "net."), **projector}, "online_encoder."),
            **prefixed({**prefixed(backbone_state(b), "net."), **projector}, "target_encoder."),
            **mlp("online_predictor.net.", [64, 256, 64])}


def pytorch_byol(a, b):
    """sthalles/PyTorch-BYOL: Sequential children of torchvision's ResNet under `encoder.`."""
    head = mlp("projetion.net.", [512, 256, 64])
    return {"online_network_state_dict": {**prefixed(sequential_children(a), "encoder."), **head},
            "target_network_state_dict": {**prefixed(sequential_children(b), "encoder."), **head},
            "optimizer_state_dict": {"state": {}, "param_groups": []}}


def plain(a, b):  # Barlow Twins, VICReg and DINO's backbone-only releases
    return backbone_state(a)


def simclr_v1(a, b):  # the SimCLR v1 converter: torchvision names, classifier kept, under state_dict
    return {"state_dict": {k: v.clone() for k, v in a.state_dict().items()}}


def lightly(a, b):
    return {"state_dict": {**prefixed(sequential_children(a), "backbone."),
                           **mlp("projection_head.layers.", [512, 512, 128])}}


def simclr_v2(a, b):
    """The SimCLR v2 TensorFlow-to-PyTorch converter's ResNet: a Sequential of stem and four `Blocks`."""
    state = {}
    for key, value in a.state_dict().items():
        parts = key.split(".")
        if parts[0] == "conv1":
            state["net.0.0.weight"] = value
        elif parts[0] == "bn1":
            state[f"net.0.1.0.{parts[1]}"] = value
        elif parts[0] == "fc":
            state[key] = value
        else:
            stage, block, module = parts[0][-1], parts[1], parts[2]
            where = f"net.{stage}.blocks.{block}."
            if module == "downsample":
                state[where + ("projection.shortcut.weight" if parts[3] == "0" else f"projection.bn.0.{parts[4]}")] = value
            elif module.startswith("conv"):
                state[where + f"net.{2 * (int(module[-1]) - 1)}.weight"] = value
            else:
                state[where + f"net.{2 * int(module[-1]) - 1}.0.{parts[3]}"] = value
    head = mlp("layers.", [2048, 2048, 2048, 128], bias=False)
    return {"resnet": state, "head": head}


class _OpenClipBlock(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, 1, batch_first=True)
        self.mlp = nn.Sequential(OrderedDict(c_fc=nn.Linear(width, 4 * width), gelu=nn.GELU(),
                                             c_proj=nn.Linear(4 * width, width)))

    def forward(self, x):
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class OpenClipVisual(nn.Module):
    """OpenCLIP's VisionTransformer, written from its module names: the reference for its image tower."""

    def __init__(self, width=64, patch=8, size=32, depth=2, out=32):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, patch, patch, bias=False)
        self.class_embedding = nn.Parameter(torch.randn(width) * 0.1)
        self.positional_embedding = nn.Parameter(torch.randn((size // patch) ** 2 + 1, width) * 0.1)
        self.ln_pre, self.ln_post = nn.LayerNorm(width), nn.LayerNorm(width)
        self.transformer = nn.Module()
        self.transformer.resblocks = nn.ModuleList(_OpenClipBlock(width) for _ in range(depth))
        self.proj = nn.Parameter(torch.randn(width, out))

    def forward(self, x):  # the pooled embedding before `proj` (the joint-space projection)
        x = self.conv1(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.class_embedding.expand(x.shape[0], 1, -1), x], dim=1) + self.positional_embedding
        x = self.ln_pre(x)
        for block in self.transformer.resblocks:
            x = block(x)
        return self.ln_post(x)[:, 0]


def openclip(a, b):
    visual = a
    text = {"token_embedding.weight": torch.randn(100, 32), "positional_embedding": torch.randn(16, 32),
            "transformer.resblocks.0.attn.in_proj_weight": torch.randn(96, 32), "ln_final.weight": torch.ones(32),
            "text_projection": torch.randn(32, 32), "logit_scale": torch.tensor(4.6)}
    return {**prefixed(visual.state_dict(), "visual."), **text}


# name -> (layout, model family, what the layout line names as taken, rule, a dropped group)
LAYOUTS = {
    "moco-v2": (moco_v2, "resnet", "state_dict.module.encoder_q", "query over key", "fc"),
    "moco-v3-resnet": (moco_v3, "resnet", "state_dict.module.base_encoder", "base over momentum", "predictor"),
    "moco-v3-vit": (moco_v3, "vit", "state_dict.module.base_encoder", "base over momentum", "predictor"),
    "dino-full-resnet": (dino_full, "resnet", "teacher.backbone", "teacher over student", "teacher.head"),
    "dino-full-vit": (dino_full, "vit", "teacher.backbone", "teacher over student", "student.head"),
    "dino-backbone-resnet": (plain, "resnet", "(top level)", None, None),
    "dino-backbone-vit": (plain, "vit", "(top level)", None, None),
    "swav": (swav, "resnet", "module", None, "prototypes"),
    "solo-learn-simclr": (solo_learn_simclr, "resnet", "state_dict.backbone", None, "classifier"),
    "solo-learn-byol": (solo_learn_byol, "resnet", "state_dict.backbone", "base over momentum", "predictor"),
    "byol-pytorch": (byol_pytorch, "resnet", "net", "online over target", "online_predictor"),
    "pytorch-byol": (pytorch_byol, "resnet", "online_network_state_dict.encoder", "online over target", "projetion"),
    "barlow-twins-vicreg": (plain, "resnet", "(top level)", None, None),
    "simclr-v1-converted": (simclr_v1, "resnet", "state_dict", None, "fc"),
    "simclr-v2-converted": (simclr_v2, "resnet50", "resnet", None, "head"),
    "lightly": (lightly, "resnet", "state_dict.backbone", None, None),
    "openclip-vit": (openclip, "openclip", "visual", None, "text_projection"),
}


def _models(family: str):
    if family == "vit":
        return vit(0), vit(1)
    if family == "openclip":
        torch.manual_seed(0)
        return OpenClipVisual().eval(), None
    depth = 50 if family == "resnet50" else 18
    return resnet(0, depth), resnet(1, depth)


def _reference(family: str, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    mean, std = CLIP if family == "openclip" else IMAGENET
    with torch.no_grad():
        if family.startswith("resnet"):
            fc, model.fc = model.fc, nn.Identity()
            try:
                return model((images - mean) / std)
            finally:
                model.fc = fc
        return model((images - mean) / std)


_FOLDER = Path(tempfile.mkdtemp(prefix="layouts-"))
atexit.register(shutil.rmtree, _FOLDER, ignore_errors=True)


@functools.lru_cache(maxsize=None)
def layout_file(name: str) -> tuple[Path, torch.Tensor, torch.Tensor]:
    """Layout `name` written once per test process (tests/cli/test_inspect.py reads the same files):
    its path, test images, and the reference model's features on them."""
    build, family, *_ = LAYOUTS[name]
    a, b = _models(family)
    path = _FOLDER / f"{name}.pth"
    torch.save(build(a, b), path)
    size = 32 if family in ("vit", "openclip") else 64  # a ResNet takes any size: 64 px keeps it fast
    images = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(2))
    return path, images, _reference(family, a, images)


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_layout_loads_to_the_reference_features(name):
    _, _, taken, rule, dropped = LAYOUTS[name]
    path, images, reference = layout_file(name)
    loaded = load_encoder(str(path))
    with torch.no_grad():
        features = loaded.encoder.eval().features(images)
    assert torch.allclose(features, reference, atol=1e-4, rtol=1e-4), name
    assert loaded.layout.startswith(f"took {taken} as "), loaded.layout
    if rule:
        assert f"({rule})" in loaded.layout
    if dropped:
        assert "dropped" in loaded.layout and dropped in loaded.layout, loaded.layout
    assert not loaded.has_pretrained_head


def test_a_simclr_projection_head_beside_the_backbone_is_kept(tmp_path):
    model = resnet(0)
    layout = find_backbone({**prefixed(sequential_children(model), "backbone."),
                            **mlp("g.", [512, 512, 128], bias=False), "g.3.bias": torch.zeros(128)}, "test")
    assert layout.head_prefix == "g." and "kept the projection head g" in layout.describe()
    # a momentum network's head is never taken for the online one's
    layout = find_backbone({**prefixed(backbone_state(model), "backbone."),
                            **prefixed(backbone_state(resnet(1)), "momentum_backbone."),
                            **mlp("momentum_projector.", [512, 512, 128], bias=False),
                            "momentum_projector.3.bias": torch.zeros(128)}, "test")
    assert not layout.head and "momentum_projector" in layout.describe()


def test_two_networks_and_no_rule_is_ambiguous_and_prefix_picks_one(tmp_path):
    a, b = resnet(0), resnet(1)
    path = tmp_path / "two.pth"
    torch.save({"net_a": backbone_state(a), "net_b": backbone_state(b)}, path)
    with pytest.raises(UserError) as info:
        load_encoder(str(path))
    message = str(info.value)
    assert "net_a (resnet18)" in message and "net_b (resnet18)" in message and "--prefix" in message
    loaded = load_encoder(str(path), prefix="net_b")
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(loaded.encoder.eval().features(images), _reference("resnet", b, images), atol=1e-4)
    assert "took net_b" in loaded.layout and "(--prefix)" in loaded.layout
    with pytest.raises(UserError, match="names no network"):
        load_encoder(str(path), prefix="net_c")


def test_copies_with_equal_weights_count_once(tmp_path):
    a = resnet(0)
    layout = find_backbone({"encoder_a": backbone_state(a), "encoder_b": backbone_state(a)}, "test")
    assert layout.network.prefix == "encoder_a."


def test_arch_names_what_the_weights_cannot_say(tmp_path):
    """Attention heads leave no trace in a ViT's shapes: 64 channels a head is assumed, and
    `--arch timm/NAME?ARG=VALUE` says otherwise (MoCo v3's ViT-S has 12 heads of 32 channels)."""
    args = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4)
    model = _randomise(timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, **args), 0)
    path = tmp_path / "vit.pth"
    torch.save({"state_dict": prefixed(backbone_state(model), "module.base_encoder.")}, path)
    images = torch.rand(2, 3, 32, 32)
    guessed = load_encoder(str(path))
    assert "assumed 1 attention head" in guessed.layout
    arch = "timm/vit_tiny_patch16_224?" + "&".join(f"{k}={v}" for k, v in args.items())
    named = load_encoder(str(path), arch=arch)
    with torch.no_grad():
        reference = model(named.encoder.normalize(images))  # timm's preprocessing for that name
        assert torch.allclose(named.encoder.eval().features(images), reference, atol=1e-4)
        assert not torch.allclose(guessed.encoder.eval().features(images), reference, atol=1e-4)
    assert named.encoder.arch == "timm/vit_tiny_patch16_224" and "assumed" not in named.layout
    # the saved encoder keeps the heads it was given
    from encoder_clean.encoders.io import save_encoder

    save_encoder(named.encoder, tmp_path / "vit.safetensors", produced_by="test")
    with torch.no_grad():
        again = load_encoder(str(tmp_path / "vit.safetensors")).encoder.eval().features(images)
    assert torch.allclose(again, reference, atol=1e-4)
    with pytest.raises(UserError, match="do not match architecture resnet18"):
        load_encoder(str(path), arch="resnet18")
    with pytest.raises(UserError, match="expected timm/NAME"):
        load_encoder(str(path), arch="timm/vit_tiny_patch16_224?heads")


class _Config:
    """A training config saved beside the weights: building it would leave a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __setstate__(self, state):
        Path(state["marker"]).touch()


def test_whole_pickled_models_and_configs_load_without_running_their_classes(tmp_path):
    import numpy as np

    model = resnet(0)
    torch.save(model, tmp_path / "whole.pt")  # `torch.save(model)`: the classes are named, never built here
    loaded = load_encoder(str(tmp_path / "whole.pt"))
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(loaded.encoder.eval().features(images), _reference("resnet", model, images), atol=1e-4)
    assert loaded.layout == "took (top level) as resnet18; dropped 2 tensors (fc)"
    marker = tmp_path / "config-was-built"
    torch.save({"state_dict": prefixed(backbone_state(model), "backbone."), "epoch": np.int64(3),
                "hyper_parameters": {"cfg": _Config(str(marker))}, "args": argparse.Namespace(lr=0.1)},
               tmp_path / "last.ckpt")
    assert load_encoder(str(tmp_path / "last.ckpt")).layout.startswith("took state_dict.backbone as resnet18")
    assert not marker.exists()


# ------------------------------------------------------------------------------ through the commands
SMALL = "resnet10-cifar-w8"  # torchvision's parameter names at CPU size: the commands run in seconds
TINY = "builtin?train=64&test=40"


def moco_v2_small(path: Path) -> None:
    from encoder_clean.encoders import create_encoder

    torch.manual_seed(0)
    query, key = create_encoder(SMALL, head=False), create_encoder(SMALL, head=False)
    torch.save(moco_v2(query, key), path)


def test_scan_evaluate_and_distill_run_on_a_moco_checkpoint(tmp_path):
    from typer.testing import CliRunner

    from encoder_clean.cli import app

    runner = CliRunner()
    path = tmp_path / "moco_v2.pth.tar"
    moco_v2_small(path)
    runs = {
        "scan": ["scan", str(path), "--data", "builtin:shapes?train=64&test=10", "--shadow-images", "32",
                 "-o", "steps=5", "-o", "batch_size=8", "--device", "cpu", "-q", "--json", "-"],
        "evaluate": ["evaluate", str(path), "--data", TINY, "--probe-epochs", "2", "--device", "cpu", "-q",
                     "--json", "-"],
        "distill": ["distill", str(path), "--student", "void", "--loss", "sp", "--finetune", "none", "--data", TINY,
                    "--clean-fraction", "0.5", "--epochs", "1", "--batch-size", "16", "--device", "cpu", "-q",
                    "--out", str(tmp_path / "student.safetensors"), "--json", "-"],
    }
    for command, args in runs.items():
        result = runner.invoke(app, args)
        assert result.exit_code in ((0, 1) if command == "scan" else (0,)), (command, result.output)
        assert f"took state_dict.module.encoder_q as {SMALL}" in result.stderr, (command, result.stderr)
        assert "(query over key)" in result.stderr
        json.loads(result.stdout)
    student = load_encoder(str(tmp_path / "student.safetensors"))
    assert student.encoder.arch == SMALL and student.metadata["parent_sha256"] == load_encoder(str(path)).sha256


def test_ambiguous_checkpoint_is_exit_2_naming_the_candidates(tmp_path):
    from tests.cli.test_cli import assert_clean_error, run_cli

    path = tmp_path / "two.pth"
    torch.save({"net_a": backbone_state(resnet(0)), "net_b": backbone_state(resnet(1))}, path)
    result = run_cli("evaluate", str(path), "--data", TINY)
    assert_clean_error(result)
    assert "net_a (resnet18), net_b (resnet18)" in result.stderr and "--prefix" in result.stderr
