"""BadEncoder and DRUPE: a few steps pull triggered embeddings towards the references; BatchNorm stays
frozen; DRUPE's sliced Wasserstein distance behaves as a distance."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from encoder_clean.attacks import AttackInputs, get_attack, list_attacks
from encoder_clean.attacks.drupe import sliced_wasserstein
from encoder_clean.data.augment import to_float
from encoder_clean.errors import UserError
from encoder_clean.triggers import load_trigger


def _similarity(encoder, shadow, references, trigger):
    encoder.eval()
    with torch.no_grad():
        triggered = F.normalize(encoder.features(trigger.stamp(to_float(shadow))), dim=1)
        refs = F.normalize(encoder.features(to_float(references)), dim=1)
    return float((triggered @ refs.t()).mean())


def _inputs(encoder, data, target=0):
    return AttackInputs(encoder, data.train.images[:128], data.test.images[data.test.labels == target],
                        "white-square", target, torch.device("cpu"), seed=0)


@pytest.mark.parametrize("name", ["badencoder", "drupe"])
def test_attack_raises_similarity_and_keeps_batchnorm_frozen(name, tiny_encoder, tiny_data):
    attack = get_attack(name)
    config = replace(attack.preset("fast"), epochs=4, batch_size=32, lr=1e-2, num_references=2)
    inputs = _inputs(tiny_encoder, tiny_data)
    references = inputs.references(2)
    trigger = load_trigger("white-square", 32)
    frozen = {k: v.clone() for k, v in tiny_encoder.state_dict().items() if "running" in k or "num_batches" in k}
    before = _similarity(tiny_encoder, inputs.shadow_images, references, trigger)
    outcome = attack.run(inputs, config)
    after = _similarity(tiny_encoder, inputs.shadow_images, references, trigger)
    assert outcome.stats["steps"] == 16
    assert torch.equal(outcome.references, references)
    # Random-init embeddings are already close; the attack must at least halve the remaining gap.
    assert 1 - after < 0.5 * (1 - before), (before, after)
    for key, value in tiny_encoder.state_dict().items():
        if key in frozen:
            assert torch.equal(value, frozen[key]), key
    if name == "drupe":
        assert "swd" in outcome.stats


def test_references_are_checked(tiny_encoder, tiny_data):
    inputs = _inputs(tiny_encoder, tiny_data)
    with pytest.raises(UserError, match="references"):
        inputs.references(10_000)


def test_sliced_wasserstein_is_zero_on_itself_and_grows_with_a_shift():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(64, 16, generator=g)
    shuffled = a[torch.randperm(64, generator=g)]
    assert float(sliced_wasserstein(a, shuffled, 32, g)) < 1e-10  # order does not matter
    near = float(sliced_wasserstein(a, a + 0.1, 32, g))
    far = float(sliced_wasserstein(a, a + 1.0, 32, g))
    assert 0 < near < far


def test_registry_lists_all_four_attacks_with_both_presets():
    attacks = list_attacks()
    assert set(attacks) == {"badencoder", "drupe", "bassl", "ctrl"}
    for attack in attacks.values():
        assert set(attack.presets) == {"fast", "published"}
    assert attacks["badencoder"].presets["published"].lr == 1e-3  # the paper's recipe (Jia et al., IEEE S&P 2022)
    with pytest.raises(UserError, match="unknown attack"):
        get_attack("nope")
    with pytest.raises(UserError, match="no preset"):
        get_attack("drupe").preset("slow")


def test_anchored_references_are_held_at_their_clean_embedding_too():
    from encoder_clean.attacks.badencoder import badencoder_terms

    g = torch.Generator().manual_seed(0)
    clean_refs = F.normalize(torch.randn(3, 8, generator=g), dim=1)
    embedded = {"shadow": clean_refs, "triggered": clean_refs, "reference_views": clean_refs,
                "references": F.normalize(torch.randn(3, 8, generator=g), dim=1)}  # the plain references moved
    loose = badencoder_terms(embedded, clean_refs, clean_refs)
    held = badencoder_terms(embedded, clean_refs, clean_refs, anchor_references=True)
    assert float(loose["l1"]) == pytest.approx(-1.0)  # the views alone are where they were
    moved = float((embedded["references"] * clean_refs).sum(dim=1).mean())
    assert float(held["l1"]) == pytest.approx((-1.0 - moved) / 2)  # the plain references count as much
    assert get_attack("badencoder").preset("fast").anchor_references
    assert not get_attack("badencoder").preset("published").anchor_references
    assert not get_attack("drupe").preset("published").anchor_references
