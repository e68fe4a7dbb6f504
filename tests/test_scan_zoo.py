"""benchmarks/scan_zoo.py: the split, and which members enter the rates (the zoo itself takes hours)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tests.benchmarks import load_benchmark


ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def scan_zoo():
    return load_benchmark("scan_zoo")


def test_a_poisoned_member_counts_only_when_its_attack_took(scan_zoo):
    took = scan_zoo.ATTACK_TOOK
    assert scan_zoo.counted({"backdoor": False, "attack_asr": None})
    assert scan_zoo.counted({"backdoor": True, "attack_asr": took})
    assert not scan_zoo.counted({"backdoor": True, "attack_asr": took - 0.01})


def test_a_poisoned_member_is_evaluated_on_the_data_its_attack_aimed_at(scan_zoo):
    members = {m.name: m for m in scan_zoo.zoo("folder:/nowhere")}
    member = members["badencoder-white-square-t0-e8-clean-shapes-w16-s0"]
    assert scan_zoo.downstream_of(member) == "builtin:glyphs"
    assert scan_zoo.downstream_of(members["default-badencoder-white-square"]) == "builtin"


def test_the_split_is_fixed_by_the_name_alone_and_keeps_a_third_for_calibration(scan_zoo):
    names = [m.name for m in scan_zoo.zoo("folder:/nowhere")]
    splits = [scan_zoo.split_of(name) for name in names]
    assert splits == [scan_zoo.split_of(name) for name in names]
    assert 0.2 < splits.count(scan_zoo.CALIBRATION) / len(names) < 0.45


def test_member_names_spell_the_trigger_with_its_place_and_keep_the_older_names(scan_zoo):
    assert scan_zoo.short_name("checkerboard:6@0,0") == "checkerboard6-at-0-0"
    assert scan_zoo.short_name("white-square") == "white-square"
    assert scan_zoo.short_name("sample_triggers/plus_9x9.png@2,12") == "plus_9x9-at-2-12"
    assert scan_zoo.short_name(scan_zoo.NPZ_TRIGGER) == "trigger_pt_white_21_10_ap_replace"


def test_the_fresh_members_all_fall_in_the_held_out_part_and_their_triggers_exist(scan_zoo):
    fresh = [m for m in scan_zoo.zoo("folder:/nowhere") if "fresh" in m.tags]
    assert len(fresh) >= 15
    assert {scan_zoo.split_of(m.name) for m in fresh} == {scan_zoo.HELD_OUT}
    for member in fresh:
        if member.backdoor:
            trigger = member.command[member.command.index("--trigger") + 1].partition("@")[0]
            assert "/" not in trigger or (ROOT / trigger).exists()


def test_methods_that_scanned_different_members_are_also_compared_on_the_common_ones(scan_zoo):
    def row(name, method, split="held-out", tags=()):
        return {"name": name, "method": method, "split": split, "tags": list(tags)}

    rows = [row("a", "fast"), row("b", "fast"), row("c", "fast", "calibration"), row("a", "slow")]
    scopes = scan_zoo.comparison_scopes(rows, ["fast", "slow"])
    assert scopes[:2] == [("fast", "fast", {"a", "b"}), ("slow", "slow", {"a"})]
    assert [(m, names) for m, _, names in scopes[2:]] == [("fast", {"a"}), ("slow", {"a"})]
    assert scan_zoo.comparison_scopes(rows[:3], ["fast"]) == [("fast", "fast", {"a", "b"})]


def test_the_fresh_part_is_also_summarised_alone_beside_the_older_part(scan_zoo):
    rows = [{"name": "old", "method": "m", "split": "held-out", "tags": []},
            {"name": "new", "method": "m", "split": "held-out", "tags": ["fast", "fresh"]},
            {"name": "cal", "method": "m", "split": "calibration", "tags": []}]
    scopes = scan_zoo.comparison_scopes(rows, ["m"])
    assert [(label, names) for _, label, names in scopes] == [
        ("m", {"old", "new"}), ("m, fresh part only", {"new"}), ("m, older part only", {"old"})]


def test_a_cached_scan_is_rescored_with_both_current_limits_beside_its_score(scan_zoo):
    config = scan_zoo.get_method("encoder-clean").config
    cached = {"anomaly_index": 1.0, "anomaly_limit": 3.0, "collapse_gap": 2 * config.gap_limit, "gap_limit": 99.0,
              "score": 0.3, "verdict": "clean"}
    row = scan_zoo.rescored(cached, "encoder-clean")
    assert (row["anomaly_limit"], row["gap_limit"]) == (config.anomaly_limit, config.gap_limit)
    assert row["score"] == pytest.approx(2.0) and row["verdict"] == "backdoor" and row["rescored"]


def test_the_trigger_limits_sit_between_the_flagged_clean_encoders_and_the_backdoors(scan_zoo):
    config = scan_zoo.get_method("encoder-clean").config
    far = 2 * config.gap_limit  # flagged by the collapse gap alone, whatever the anomaly index

    def row(identity, anomaly, backdoor, gap=far):
        return {"identity_kept": identity, "backdoor": backdoor, "anomaly_index": anomaly, "collapse_gap": gap}

    rows = [row(0.7, 1.0, False), row(0.5, 2.0, False),  # fragile clean encoders: kept 0.5 at least, out by 2.0 at most
            row(0.1, 1.0, True), row(0.3, 3.9, True),  # erasing backdoors (3.9 is not more than twice 2.0)
            row(0.6, 6.0, True), row(0.45, 8.0, True),  # backdoors whose window stands out
            row(0.2, 0.5, False, gap=0.5)]  # a clean encoder the collapse figures pass: no say
    assert scan_zoo.trigger_limits_from(rows, config) == pytest.approx((0.4, 4.0))  # (0.3+0.5)/2, (2.0+6.0)/2
    erasing_only = [r for r in rows if r["anomaly_index"] < 5]
    assert scan_zoo.trigger_limits_from(erasing_only, config) == (0.4, math.inf)
    assert scan_zoo.trigger_limits_from(rows[2:], config) == (1.0, math.inf)  # nothing to set them against


def test_the_trigger_test_caps_a_collapse_that_neither_erases_the_images_nor_stands_out(scan_zoo):
    config = scan_zoo.get_method("encoder-clean").config
    far = 3 * config.gap_limit  # the shipped score: 3.0
    limits = (0.4, 4.0)

    def score(identity, anomaly, gap=far):
        row = {"identity_kept": identity, "anomaly_index": anomaly, "collapse_gap": gap}
        return scan_zoo.trigger_test_score(row, config, limits)

    assert score(0.7, 1.0) == pytest.approx(max(0.3 / 0.6, 1.0 / 4.0))  # fragile: passes
    assert score(0.1, 1.0) == pytest.approx(0.9 / 0.6)  # the stamp erases the images
    assert score(0.7, 8.0) == pytest.approx(2.0)  # the window stands out
    assert score(0.0, 0.0, gap=0.5 * config.gap_limit) == pytest.approx(0.5)  # no collapse, no backdoor


def test_the_blind_part_is_summarised_alone_and_out_of_the_older_part(scan_zoo):
    rows = [{"name": "old", "method": "m", "split": "held-out", "tags": []},
            {"name": "new", "method": "m", "split": "held-out", "tags": ["fresh"]},
            {"name": "blind", "method": "m", "split": "held-out", "tags": ["fast", "blind"]}]
    scopes = scan_zoo.comparison_scopes(rows, ["m"])
    assert [(label, names) for _, label, names in scopes] == [
        ("m", {"old", "new", "blind"}), ("m, fresh part only", {"new"}), ("m, blind part only", {"blind"}),
        ("m, older part only", {"old"})]


def test_every_blind_member_was_named_into_the_held_out_part(scan_zoo):
    for tag, size, backdoored in ((scan_zoo.BLIND, 12, 6), (scan_zoo.BLIND2, 17, 10)):
        blind = [m for m in scan_zoo.zoo("folder:/nowhere") if tag in m.tags]
        assert len(blind) == size and sum(m.backdoor for m in blind) == backdoored
        assert all(scan_zoo.split_of(m.name) == scan_zoo.HELD_OUT for m in blind)


def test_the_cue_limits_sit_between_the_deep_clean_collapses_and_the_backdoors(scan_zoo):
    config = scan_zoo.get_method("encoder-clean").config
    deep, quiet = 2 * config.gap_limit, 0.5 * config.anomaly_limit

    def row(offset, blur_kept, backdoor, gap=deep, anomaly=quiet):
        return {"offset": offset, "blur_kept": blur_kept, "backdoor": backdoor, "collapse_gap": gap,
                "anomaly_index": anomaly}

    rows = [row(1.5, 0.98, False), row(2.5, 0.9, False),  # fragile clean encoders: out 2.5 at most, keep 0.9 at least
            row(5.5, 0.9, True), row(20.0, 0.1, True),  # far-out backdoors: the nearest at 5.5
            row(1.0, 0.3, True),  # a backdoor near the clean ones whose blurred pattern undoes it
            row(9.0, 1.0, False, gap=0.5 * config.gap_limit),  # a shallow clean collapse: no say
            row(0.5, 0.95, True, anomaly=2 * config.anomaly_limit)]  # a standing-out window: no say
    assert scan_zoo.cue_limits_from(rows, config) == pytest.approx((4.0, 0.6))  # (2.5+5.5)/2, (0.9+0.3)/2
    assert scan_zoo.cue_limits_from(rows[:4], config) == pytest.approx((4.0, 0.9))  # no backdoor to set blur against
    assert scan_zoo.cue_limits_from(rows[2:], config) == (0.0, 0.0)  # no deep clean collapse: the cues off


def test_the_decree_comparison_takes_the_members_both_scanned_each_at_its_own_threshold(scan_zoo, monkeypatch):
    published = {}
    monkeypatch.setattr(scan_zoo, "publish", lambda name, title, rows, columns, **_: published.update({name: rows}))

    def row(name, method, score, backdoor, tags=("blind2",), asr=90.0):
        threshold = scan_zoo.get_method(method).threshold
        return {"name": name, "method": method, "score": score, "verdict": "backdoor" if score > threshold else "clean",
                "seconds": 1.0, "split": "held-out", "backdoor": backdoor, "attack": "badencoder" if backdoor else "-",
                "attack_asr": asr if backdoor else None, "tags": list(tags)}

    rows = [row("bd", "encoder-clean", 1.5, True), row("bd", "decree", 0.85, True),  # decree misses it (0.90)
            row("ok", "encoder-clean", 0.5, False), row("ok", "decree", 0.95, False),  # and flags this one
            row("failed", "encoder-clean", 1.2, True, asr=10.0), row("failed", "decree", 0.99, True, asr=10.0),
            row("mine-only", "encoder-clean", 2.0, True)]  # decree never scanned it: not in the comparison
    scan_zoo.publish_versus(rows, type("Args", (), {"notes": "", "load": ""})())
    assert [r["name"] for r in published["scan-vs-decree"]] == ["bd", "ok", "failed"]
    assert published["scan-vs-decree"][2]["backdoor"] == "attack failed (10.0)"
    rates = {r["verdict"]: r for r in published["scan-vs-decree-rates"]}
    ours, theirs = rates["encoder-clean (shipped)"], rates["decree (published settings)"]
    assert ours["encoders"] == theirs["encoders"] == "2 (1 backdoored)"  # the failed attack is left out
    assert (ours["tpr"], ours["fpr"], ours["auroc"]) == ("100.0", "0.0", "1.000")
    assert (theirs["tpr"], theirs["fpr"], theirs["auroc"]) == ("0.0", "100.0", "0.000")
