"""Checkpoint loading and saving: every format, legacy layouts, hostile and broken files."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch

from encoder_clean.encoders import create_encoder
from encoder_clean.encoders.io import load_encoder, save_encoder
from encoder_clean.errors import UserError

ARCH = "resnet10-cifar-w8"


def _features(encoder, images):
    encoder.eval()
    with torch.no_grad():
        return encoder.features(images)


def test_safetensors_round_trip_keeps_weights_head_and_metadata(tmp_path, tiny_encoder, images):
    path = tmp_path / "enc.safetensors"
    sha = save_encoder(tiny_encoder, path, produced_by="test", parent_sha256="ab" * 32,
                       settings={"attack": "badencoder", "target_class": 3})
    loaded = load_encoder(str(path))
    assert loaded.sha256 == sha and loaded.has_pretrained_head
    assert torch.equal(_features(loaded.encoder, images), _features(tiny_encoder, images))
    z = torch.randn(3, tiny_encoder.feature_dim)
    tiny_encoder.head.eval(), loaded.encoder.head.eval()
    assert torch.equal(loaded.encoder.project(z), tiny_encoder.project(z))
    meta = loaded.metadata
    for key in ("format_version", "arch", "image_size", "mean", "std", "feature_dim", "produced_by",
                "parent_sha256"):
        assert key in meta
    assert meta["arch"] == ARCH and loaded.setting("target_class") == 3 and loaded.setting("attack") == "badencoder"
    assert json.loads(meta["mean"]) == pytest.approx([0.4914, 0.4822, 0.4465])


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path, tiny_encoder):
    save_encoder(tiny_encoder, tmp_path / "a.safetensors", produced_by="test")
    assert sorted(os.listdir(tmp_path)) == ["a.safetensors"]


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin"])
def test_torch_state_dict_with_arch_and_inferred(tmp_path, tiny_encoder, images, suffix):
    path = tmp_path / f"enc{suffix}"
    torch.save(tiny_encoder.state_dict(), path)
    for arch in (ARCH, None):
        loaded = load_encoder(str(path), arch=arch)
        assert loaded.encoder.arch == ARCH
        assert torch.equal(_features(loaded.encoder, images), _features(tiny_encoder, images))


def _badencoder_layout(encoder) -> dict[str, torch.Tensor]:
    """The public SimCLR/BadEncoder release's names: Sequential backbone under f.f., head under g."""
    order = ["conv1", "bn1", None, "layer1", "layer2", "layer3", "layer4"]
    state = {}
    for key, value in encoder.state_dict().items():
        module, _, rest = key.partition(".")
        if module == "head":
            state["g." + rest.partition(".")[2]] = value
        else:
            state[f"f.f.{order.index(module)}.{rest}"] = value
    return state


def test_badencoder_layout_with_wrapper_and_dataparallel_prefix(tmp_path, tiny_encoder, images):
    state = {"module." + k: v for k, v in _badencoder_layout(tiny_encoder).items()}
    assert "module.f.f.0.weight" in state and "module.g.0.weight" in state
    path = tmp_path / "model_200.pth"
    torch.save({"epoch": 200, "state_dict": state, "optimizer": {"lr": 0.001}}, path)
    loaded = load_encoder(str(path))
    assert loaded.has_pretrained_head and loaded.encoder.arch == ARCH
    assert torch.equal(_features(loaded.encoder, images), _features(tiny_encoder, images))


def test_torchvision_resnet_state_dict_loads(tmp_path, images):
    import torchvision

    reference = torchvision.models.resnet18(num_classes=10).eval()
    path = tmp_path / "tv.pth"
    torch.save(reference.state_dict(), path)
    loaded = load_encoder(str(path)).encoder.eval()
    assert loaded.arch == "resnet18"
    x = torch.rand(2, 3, 64, 64)
    reference.fc = torch.nn.Identity()
    with torch.no_grad():
        assert torch.allclose(loaded.features(x), reference(loaded.normalize(x)), atol=1e-5)


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_pickle_that_would_run_code_is_refused_and_runs_nothing(tmp_path):
    marker = str(tmp_path / "pwned")
    path = tmp_path / "evil.pt"
    with open(path, "wb") as handle:
        pickle.dump({"state_dict": _Exploit(marker)}, handle)
    # A torch.save'd zip with the exploit inside, too.
    zipped = tmp_path / "evil_zip.pt"
    torch.save({"conv1.weight": torch.zeros(1), "x": _Exploit(marker)}, zipped)
    for candidate in (path, zipped):
        with pytest.raises(UserError, match="refused"):
            load_encoder(str(candidate))
    assert not os.path.exists(marker)


@pytest.mark.parametrize("mutation", ["truncate", "garbage", "empty", "header-length"])
def test_corrupt_safetensors_is_a_user_error(tmp_path, tiny_encoder, mutation):
    path = tmp_path / "enc.safetensors"
    save_encoder(tiny_encoder, path, produced_by="test")
    data = path.read_bytes()
    broken = {"truncate": data[: len(data) // 2], "garbage": b"\x00garbage" * 10, "empty": b"",
              "header-length": (2**62).to_bytes(8, "little") + data[8:]}[mutation]
    path.write_bytes(broken)
    with pytest.raises(UserError) as info:
        load_encoder(str(path))
    assert "\n" not in str(info.value)


def test_truncated_torch_file_is_a_user_error(tmp_path, tiny_encoder):
    path = tmp_path / "enc.pt"
    torch.save(tiny_encoder.state_dict(), path)
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(UserError, match="refused"):
        load_encoder(str(path))


def test_mismatched_weights_and_architectures(tmp_path, tiny_encoder):
    path = tmp_path / "enc.pt"
    torch.save(tiny_encoder.state_dict(), path)
    with pytest.raises(UserError, match="do not match architecture resnet18-cifar-w16"):
        load_encoder(str(path), arch="resnet18-cifar-w16")
    with pytest.raises(UserError, match="unknown architecture"):
        load_encoder(str(path), arch="vgg-nonexistent")
    safe = tmp_path / "enc.safetensors"
    save_encoder(tiny_encoder, safe, produced_by="test")
    with pytest.raises(UserError, match="contradicts"):
        load_encoder(str(safe), arch="resnet18-cifar")
    odd = tmp_path / "odd.pt"
    torch.save({"weight": torch.zeros(3, 3)}, odd)
    with pytest.raises(UserError, match="pass --arch"):
        load_encoder(str(odd))


def test_non_finite_weights_and_bad_metadata_are_refused(tmp_path, tiny_encoder):
    from safetensors.torch import load_file, save_file

    path = tmp_path / "enc.safetensors"
    save_encoder(tiny_encoder, path, produced_by="test")
    tensors = load_file(path)
    tensors["conv1.weight"][0, 0, 0, 0] = float("nan")
    save_file(tensors, path, metadata={"arch": ARCH})
    with pytest.raises(UserError, match="NaN"):
        load_encoder(str(path))
    tensors["conv1.weight"][0, 0, 0, 0] = 0.0
    save_file(tensors, path, metadata={"arch": ARCH, "image_size": "-3"})
    with pytest.raises(UserError, match="out of range"):
        load_encoder(str(path))


def test_missing_and_unsupported_files(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        load_encoder(str(tmp_path / "absent.safetensors"))
    other = tmp_path / "weights.onnx"
    other.write_bytes(b"x")
    with pytest.raises(UserError, match="unsupported"):
        load_encoder(str(other))


def test_every_registered_arch_round_trips(tmp_path):
    from encoder_clean.encoders import list_archs

    for info in list_archs():
        if info.name.endswith(("resnet50", "resnet34", "resnet50-cifar", "resnet34-cifar")):
            continue  # same code path as resnet18; skipped to keep the suite fast
        encoder = create_encoder(info.name).eval()
        path = tmp_path / f"{info.name}.safetensors"
        save_encoder(encoder, path, produced_by="test")
        loaded = load_encoder(str(path)).encoder.eval()
        x = torch.rand(1, 3, info.image_size, info.image_size)
        with torch.no_grad():
            assert torch.equal(loaded.features(x), encoder.features(x)), info.name
