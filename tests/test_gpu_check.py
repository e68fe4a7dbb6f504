"""benchmarks/gpu_check.py: the parts of the device run that decide (epochs from the measured rate, what
counts as a failure) and the tables it returns, on made-up figures; the run itself needs a GPU."""

from __future__ import annotations

import json
import pytest

from tests.benchmarks import load_benchmark

@pytest.fixture(scope="module")
def gpu_check():
    return load_benchmark("gpu_check")


def measured(rate: float) -> dict:
    return {"plain": {"rows": [{"command": "pretrain", "ours_views_per_s": rate}]}}


def test_chain_epochs_fit_the_budget_at_a_third_of_the_measured_rate(gpu_check):
    sizes = gpu_check.FULL
    # 70 s at 30,000 / 3 views/s = 700,000 views = 7 epochs of 50,000 images in two views
    assert gpu_check.chain_epochs(sizes, measured(30_000))[0] == 7
    assert gpu_check.chain_epochs(sizes, measured(100.0))[0] == sizes.pretrain_epochs[0]
    assert gpu_check.chain_epochs(sizes, measured(1e9))[0] == sizes.pretrain_epochs[1]
    epochs, why = gpu_check.chain_epochs(sizes, {})
    assert epochs == sizes.pretrain_epochs[0] and "no throughput" in why


def test_a_stop_at_the_deadline_is_not_a_failure(gpu_check):
    status = {"data_s": 27.6, "throughput": {"plain": 0, "compiled": 1}, "chain": "stopped at the deadline",
              "poisoning-0": 0, "poisoning-3": -9}
    assert gpu_check.failures(status) == ["throughput-compiled", "poisoning-3"]


def summary() -> dict:
    return {
        "device": "GPU X", "torch": "2.0", "elapsed_s": 1.0, "status": {"chain": 0}, "chain_epochs_why": "why",
        "provenance": {"command": "python benchmarks/gpu_check.py --out OUT", "commit": "abc1234",
                       "machine": "GPU X machine", "load": "", "date": "2026-11-28 17:00 UTC"},
        "throughput": {"plain": {"setup": "plain setup", "rows": [
            {"command": "distill", "ours_views_per_s": 25000.0, "naive_views_per_s": 12500.0, "ratio": 2.0,
             "mfu_ours": 0.15, "mfu_naive": 0.07, "gflop_per_view": 4.4, "wall_s": 8.0}]},
            "compiled": {"setup": "compiled setup", "rows": [
                {"command": "distill", "ours_views_per_s": 27000.0, "mfu_ours": 0.16}]}},
        "chain": {"rows": {"clean": {"acc": 66.5, "asr": 9.7, "asr_nontarget": 3.9, "verdict": "clean",
                                     "score": 0.48}}, "seconds": {"pretrain": 114.0}},
        "poisoning-0": {"arch": "a", "data": "d", "rows": [
            {"attack": "ctrl", "victim": "simclr", "epochs": 800, "target_class": 0, "acc": 57.0, "asr": 9.5}]},
    }


def test_the_returned_summary_is_published_with_the_device_runs_provenance(gpu_check, tmp_path):
    saved = tmp_path / "gpu_check.json"
    saved.write_text(json.dumps(summary()))
    results = tmp_path / "RESULTS.md"
    results.write_text("# Measured results\n\n## Earlier runs\n")
    written = gpu_check.publish_returned(saved, results, tmp_path / "json")
    assert written == ["gpu-throughput", "gpu-chain", "gpu-poisoning"]
    text = results.read_text()
    assert "`python benchmarks/gpu_check.py --out OUT` at commit abc1234" in text and "GPU X machine" in text
    assert "| distill | 25000 | 12500 | 2.00 | 15.00 | 7.00 | 27000 | 16.00 |" in text  # compiled beside plain
    assert "| clean | 66.50 | 9.70 | 3.90 | clean | 0.48 |" in text
    assert json.loads((tmp_path / "json" / "gpu-poisoning.json").read_text())["rows"][0]["epochs"] == 800


def test_markdown_says_what_is_missing(gpu_check):
    partial = summary()
    partial["chain"] = None
    text = gpu_check.markdown(partial)
    assert "GPU throughput" in text and "chain on real CIFAR-10" not in text and "BASSL and CTRL" in text


def test_the_chain_is_made_in_stages_each_after_what_it_needs(gpu_check):
    sizes = gpu_check.FULL
    stages = gpu_check.chain_stages(sizes)
    assert stages[0] == [((), ())]  # pre-training alone first
    assert stages[1] == [((attack,), ()) for attack in sizes.chain_attacks]
    assert sorted(stages[2]) == sorted(((a,), (d,)) for a in sizes.chain_attacks for d in sizes.chain_defenses)
    from cifar_chain import DEFENSES

    assert set(sizes.chain_defenses) <= set(DEFENSES)
