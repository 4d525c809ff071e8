"""The benchmark's inference rows: time and peak working memory per scan size, measured."""

from __future__ import annotations

import sys

import pytest

from bench.inference_speed import bench_inference
from bench.tables import to_markdown


@pytest.mark.skipif(sys.platform != "linux", reason="peak RSS reset needs /proc/self/clear_refs")
def test_inference_rows_measure_time_and_memory():
    rows = bench_inference("cpu", [16, 64], repeats=1, batch_size=8)
    assert [row["patterns"] for row in rows] == [16, 64]
    for row in rows:
        assert row["seconds"] > 0 and row["patterns_per_s"] > 0
        assert row["input_mib"] == pytest.approx(row["patterns"] * 64 * 64 * 4 / 2**20)
        # batches of 8 through a 64 px network take real memory, but far less than 1 GiB
        assert 0 < row["peak_host_rise_mib"] < 1024
        assert row["peak_device_rise_mib"] is None
    assert rows[1]["canvas_mib"] > rows[0]["canvas_mib"]  # more scan, larger canvas
    table = to_markdown({"date": "d", "device_name": "cpu", "torch": "t", "mode": "quick",
                         "inference": rows})
    assert "| 64 |" in table and "Training step" not in table
