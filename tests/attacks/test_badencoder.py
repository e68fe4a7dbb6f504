"""BadEncoder: a few steps pull triggered embeddings towards the references; BatchNorm stays frozen."""

from __future__ import annotations


import pytest
import torch
import torch.nn.functional as F

from encoder_clean.attacks import get_attack, list_attacks
from encoder_clean.attacks.badencoder import BadEncoderConfig, run_badencoder
from encoder_clean.attacks.registry import AttackInputs
from encoder_clean.data.augment import to_float
from encoder_clean.errors import UserError
from encoder_clean.triggers import load_trigger


def _similarity(encoder, shadow, references, trigger):
    encoder.eval()
    with torch.no_grad():
        triggered = F.normalize(encoder.features(trigger.stamp(to_float(shadow))), dim=1)
        refs = F.normalize(encoder.features(to_float(references)), dim=1)
    return float((triggered @ refs.t()).mean())


def test_badencoder_raises_similarity_and_keeps_batchnorm_frozen(tiny_encoder, tiny_data):
    trigger = load_trigger("white-square", 32)
    shadow = tiny_data.train.images[:128]
    references = tiny_data.test.images[tiny_data.test.labels == 0][:2]
    before_bn = {k: v.clone() for k, v in tiny_encoder.state_dict().items() if "running" in k}
    before = _similarity(tiny_encoder, shadow, references, trigger)
    inputs = AttackInputs(tiny_encoder, shadow, references, trigger, target_class=0, epochs=4,
                          device=torch.device("cpu"), seed=0)
    stats = run_badencoder(inputs, BadEncoderConfig(batch_size=32, lr=5e-2))
    after = _similarity(tiny_encoder, shadow, references, trigger)
    assert stats["steps"] == 16
    # Random-init embeddings are already close; the attack must at least halve the remaining gap.
    assert 1 - after < 0.5 * (1 - before), (before, after)
    for key, value in tiny_encoder.state_dict().items():
        if "running" in key:
            assert torch.equal(value, before_bn[key]), key


def test_registry():
    assert "badencoder" in list_attacks()
    assert get_attack("badencoder") is run_badencoder
    with pytest.raises(UserError, match="unknown attack"):
        get_attack("nope")
