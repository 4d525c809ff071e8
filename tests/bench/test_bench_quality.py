"""bench.quality end to end on a tiny scan: real CLIs, both training splits, every score."""

from __future__ import annotations

import json
import math

import pytest

from bench import quality

TINY = ["--patch-size", "16", "--n-images", "36"]
FAST = ["--n-filters-scale", "1", "--batch_size", "4", "--max_epochs", "1"]


@pytest.mark.slow
def test_rows_score_test_train_and_probe_stitch_and_self_trains_on_the_scan(tmp_path,
                                                                          monkeypatch):
    monkeypatch.setattr(quality, "CONFIGS", {"tiny": (TINY, FAST),
                                             "tiny-self": (TINY, FAST, "test")})
    assert quality.main(["--configs", "tiny,tiny-self", "--minutes", "1", "--work",
                         str(tmp_path / "work"), "--out", str(tmp_path / "out")]) == 0
    result = json.loads(next((tmp_path / "out").glob("*-quality.json")).read_text())
    rows = {row["name"]: row for row in result["rows"]}
    assert rows["tiny"]["trained_on"] == "train.npz"
    assert rows["tiny-self"]["trained_on"] == "test.npz"
    for name, split in (("tiny", "train"), ("tiny-self", "test")):
        config = json.loads((tmp_path / "work" / name / "model" / "config.json").read_text())
        assert config["train_data_file"].endswith(f"{name}/data/{split}.npz")
        assert config["training"]["max_epochs"] == 1  # the configuration's flags won
        row = rows[name]
        for key in ("metrics", "train_metrics", "probe_stitch_metrics"):
            assert {"amp_ssim", "phase_ssim", "amp_frc50"} <= set(row[key]), key
            assert all(math.isfinite(value) for value in row[key].values()), key
        # the same model and scan, stitched two ways: different numbers
        assert row["metrics"]["amp_ssim"] != row["probe_stitch_metrics"]["amp_ssim"]
        # train.npz and test.npz are different halves of the object: different numbers
        assert row["metrics"]["amp_ssim"] != row["train_metrics"]["amp_ssim"]
    table = (tmp_path / "out" / f"{result['date']}-cpu-quality.md").read_text()
    assert "| tiny | train.npz | 1 |" in table and "| tiny-self | test.npz | 1 |" in table
    assert (tmp_path / "out" / f"{result['date']}-cpu-quality.png").stat().st_size > 10_000
