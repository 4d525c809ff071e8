"""Simulation CLI and the one-command baseline (tiny settings)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ptycho_torch import baseline, simulate
from ptycho_torch.data import load_scan


def test_simulate_writes_contract_files_with_metadata(tmp_path):
    out = tmp_path / "data"
    assert simulate.cli_main(["--output-dir", str(out), "--n-images", "36", "--patch-size",
                              "32", "--n-photons", "1e5", "--seed", "3"]) == 0
    train, test = load_scan(out / "train.npz"), load_scan(out / "test.npz")
    assert train.n_patterns + test.n_patterns == 36
    assert train.patch_size == 32 and train.object_guess is not None
    meta = train.metadata
    for key in ("object", "nphotons", "noise", "overlap", "probe_diameter_px", "scan_step_px",
                "seed", "patch_size", "split"):
        assert key in meta
    assert meta["nphotons"] == 1e5 and meta["seed"] == 3 and meta["split"] == "train"
    assert 0.6 <= meta["overlap"] <= 0.7
    # Poisson counts: squared amplitudes are integers, mean total near nphotons
    counts = np.concatenate([train.diffraction, test.diffraction]).astype(np.float64) ** 2
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-2)
    assert np.mean(counts.sum(axis=(1, 2))) == pytest.approx(1e5, rel=0.01)
    # every patch lies inside its half's object
    assert train.y.max() + 16 <= train.object_guess.shape[0]
    assert test.y.min() - 16 >= 0


def test_simulate_objects_come_from_images_not_noise(small_scan):
    amp = np.abs(small_scan["object"])
    # neighbouring pixels of a photograph are strongly correlated; white noise is not
    r = np.corrcoef(amp[:, :-1].ravel(), amp[:, 1:].ravel())[0, 1]
    assert r > 0.8


@pytest.mark.parametrize("argv", [["--n-images", "2"], ["--n-photons", "-1"],
                                  ["--patch-size", "30"]])
def test_simulate_bad_flags_exit_2_nothing_written(tmp_path, capsys, argv):
    out = tmp_path / "data"
    assert simulate.cli_main(["--output-dir", str(out), *argv]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.slow
def test_baseline_tiny_end_to_end(tmp_path, small_files):
    hub = tmp_path / "hub"
    code = baseline.cli_main(["--hub", str(hub), "--train-data", str(small_files["train"]),
                              "--test-data", str(small_files["test"]), "--max-epochs", "1",
                              "--n-images", "8", "--inference-n-images", "6",
                              "--logger", "none", "--quiet", "--accelerator", "cpu"])
    assert code == 0
    for name in ("summary.md", "cli/train_patch_stats.log", "cli/inference_patch_stats.log",
                 "analysis/torch_patch_stats.json", "analysis/artifact_inventory.txt",
                 "analysis/forward_parity_debug/offsets.json",
                 "analysis/forward_parity_debug/torch_patch_stats.json",
                 "inference/metrics.json", "train/model.pt"):
        assert (hub / name).is_file(), name
    records = json.loads((hub / "analysis" / "torch_patch_stats.json").read_text())
    train_records = [r for r in records if r["stage_name"] == "train"]
    assert len(train_records) == 2 and train_records[0]["var_zero_mean"] > 0
    log = (hub / "cli" / "train_patch_stats.log").read_text()
    assert log.count("PATCH_STATS ") == len(records)
    summary = (hub / "summary.md").read_text()
    assert "PASSED" in summary and "amp_ssim" in summary
    inventory = (hub / "analysis" / "artifact_inventory.txt").read_text()
    assert "train/model.pt" in inventory and "ptycho_torch.train" in inventory


def test_baseline_failing_step_names_step_and_log(tmp_path, capsys):
    hub = tmp_path / "hub"
    bad = tmp_path / "train.npz"
    bad.write_text("not an archive")
    code = baseline.cli_main(["--hub", str(hub), "--train-data", str(bad), "--test-data",
                              str(bad), "--logger", "none", "--quiet"])
    assert code == 1
    err = capsys.readouterr().err
    assert "step 'train' failed" in err and "train_patch_stats.log" in err
    assert "not an NPZ archive" in (hub / "cli" / "train_patch_stats.log").read_text()
    assert "FAILED" in (hub / "summary.md").read_text()
