"""bench.common, and the training-step section of python -m bench on a real (tiny) run."""

from __future__ import annotations

import json
import time

import pytest

from bench.common import device_name, results_dir, timed, write_results
from bench.tables import to_markdown
from bench.train_steps import bench_train_steps, check_variant


def test_timed_returns_the_result_and_the_wall_time():
    result, seconds = timed("cpu", lambda: time.sleep(0.05) or 7)
    assert result == 7
    assert 0.05 <= seconds < 5


def test_write_results_makes_the_folder_and_both_files(tmp_path):
    stem = tmp_path / "a" / "b" / "2026-01-02-cpu-quick"
    write_results(stem, {"x": [1, 2.5], "y": None}, "# table\n")
    assert json.loads(stem.with_suffix(".json").read_text()) == {"x": [1, 2.5], "y": None}
    assert stem.with_suffix(".md").read_text() == "# table\n"


def test_device_name_and_results_folder():
    assert device_name("cpu").startswith("cpu (") and "torch thread" in device_name("cpu")
    assert results_dir().name == "results" and results_dir().parent.name == "bench"


def test_check_variant():
    for good in ("fp32", "bf16+compile", "fp32+nchw+compile", "fp32+graphs"):
        check_variant(good)
    for bad in ("fp16", "fp32+fast", ""):
        with pytest.raises(ValueError, match="cannot read"):
            check_variant(bad)


def test_train_step_rows_time_real_steps():
    rows = bench_train_steps("cpu", [2], ["fp32"], n_steps=1)
    assert len(rows) == 1
    row = rows[0]
    assert (row["batch"], row["dtype"], row["n_steps"]) == (2, "fp32", 1)
    assert row["step_ms"] > 0 and row["groups_per_s"] == pytest.approx(2e3 / row["step_ms"])
    assert row["peak_device_mib"] is None
    table = to_markdown({"date": "d", "device_name": "cpu", "torch": "t", "mode": "quick",
                         "train": rows})
    assert "| 2 | fp32 |" in table and "Inference" not in table and "Overheads" not in table
