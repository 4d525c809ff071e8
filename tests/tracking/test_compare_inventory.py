"""python -m tracking.compare on real tracked runs and by hand; python -m tracking.inventory;
the pure patch-statistics functions on tensors with known answers."""

from __future__ import annotations

import hashlib
import json
import math

import pytest
import torch

from ptycho_torch import train
from tests.tracking.conftest import run_id_of, train_argv
from tracking import compare, inventory
from tracking.patch_stats import MAX_PER_PATCH, compute_patch_stats

# -- compare on tracked runs --------------------------------------------------------------


@pytest.fixture(scope="module")
def same_and_other_runs(tracked_pair, tmp_path_factory) -> dict:
    """Beside the shared train run: one with identical args and seed, one with
    --nphotons 1e3 (the stub's metadata says 1e6), all in the shared store."""
    folder = tmp_path_factory.mktemp("compare_runs")
    ids = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        for name, extra in (("same", ()), ("other", ("--nphotons", "1e3"))):
            out = folder / name
            assert train.cli_main(train_argv(tracked_pair["data"], out, tracked_pair["uri"],
                                             *extra)) == 0
            ids[name] = run_id_of(out)
    return ids


def _compare(tmp_path, *args: str) -> int:
    return compare.cli_main([*args, "--output-dir", str(tmp_path / "cmp")])


def test_identical_runs_pass(tracked_pair, same_and_other_runs, tmp_path, capsys):
    first, same = tracked_pair["train_run_id"], same_and_other_runs["same"]
    capsys.readouterr()
    assert _compare(tmp_path, first, same, "--tracking-uri", tracked_pair["uri"]) == 0
    stdout = capsys.readouterr().out
    assert "PASS" in stdout and "| FAIL |" not in stdout
    assert (tmp_path / "cmp" / "compare.md").read_text() == stdout
    report = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert report["tolerance"] == 0.10
    assert len(report["columns"]) == 2
    assert first[:8] in report["columns"][0] and same[:8] in report["columns"][1]
    rows = {row["statistic"]: row for row in report["rows"]}
    assert "train/physics_scale" in rows and "val/input_normalized/var_zero_mean" in rows
    assert all(row["verdict"] == "PASS" for row in rows.values())
    assert rows["train/physics_scale"]["values"] == {name: 125.0 for name in report["columns"]}


def test_different_nphotons_fails_physics_scale(tracked_pair, same_and_other_runs, tmp_path):
    first, other = tracked_pair["train_run_id"], same_and_other_runs["other"]
    assert _compare(tmp_path, first, other, "--tracking-uri", tracked_pair["uri"]) == 1
    report = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    rows = {row["statistic"]: row for row in report["rows"]}
    physics = rows["train/physics_scale"]
    assert physics["verdict"] == "FAIL" and physics["parity_key"]
    baseline, value = (physics["values"][name] for name in report["columns"])
    assert baseline == pytest.approx(125.0)
    assert value == pytest.approx(math.sqrt(1e3) / 8)
    assert physics["max_rel_diff"] == pytest.approx(1 - math.sqrt(1e3) / 1e3)
    markdown = (tmp_path / "cmp" / "compare.md").read_text()
    assert any(line.startswith("| **train/physics_scale**") and line.endswith("| FAIL |")
               for line in markdown.splitlines())
    # the input normalization does not depend on nphotons: that row still passes
    assert rows["train/mean_input_scale"]["verdict"] == "PASS"


def test_a_fail_names_the_param_that_differs_and_draws_it(tracked_pair, same_and_other_runs,
                                                          tmp_path):
    from mlflow import MlflowClient
    from PIL import Image

    first, other = tracked_pair["train_run_id"], same_and_other_runs["other"]
    assert _compare(tmp_path, first, other, "--tracking-uri", tracked_pair["uri"],
                    "--log-to", other) == 1
    report = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    differ = {row["key"]: list(row["values"].values()) for row in report["differences"]}
    assert differ["param:model.nphotons"] == ["1000000.0", "1000.0"]
    assert differ["param:data.nphotons"] == ["1000000.0", "1000.0"]
    # same device, versions, numerics settings and dataset: none of them is listed
    assert not [key for key in differ if key.startswith("tag:")]
    markdown = (tmp_path / "cmp" / "compare.md").read_text()
    assert "| param:model.nphotons | 1000000.0 | 1000.0 |" in markdown
    with Image.open(tmp_path / "cmp" / "compare.png") as image:
        assert image.format == "PNG" and image.width > 1000
    client = MlflowClient(tracking_uri=tracked_pair["uri"])
    logged = {a.path for a in client.list_artifacts(other, "compare")}
    assert logged == {"compare/compare.md", "compare/compare.json", "compare/compare.png"}


def test_identical_runs_list_no_differences(tracked_pair, same_and_other_runs, tmp_path):
    assert _compare(tmp_path, tracked_pair["train_run_id"], same_and_other_runs["same"],
                    "--tracking-uri", tracked_pair["uri"]) == 0
    report = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert report["differences"] == []
    assert "the same in all runs" in (tmp_path / "cmp" / "compare.md").read_text()


def test_log_to_an_unknown_run_writes_nothing(tracked_pair, same_and_other_runs, tmp_path,
                                              capsys):
    assert _compare(tmp_path, tracked_pair["train_run_id"], same_and_other_runs["same"],
                    "--tracking-uri", tracked_pair["uri"], "--log-to", "f" * 32) == 2
    assert "--log-to" in capsys.readouterr().err
    assert not (tmp_path / "cmp").exists()


def test_run_against_its_own_reference_json(tracked_pair, tmp_path, capsys):
    reference = tracked_pair["out"] / "analysis" / "torch_patch_stats.json"
    assert _compare(tmp_path, tracked_pair["train_run_id"], "--reference", str(reference),
                    "--tracking-uri", tracked_pair["uri"]) == 0
    report = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert report["columns"][0] == "reference (torch_patch_stats.json)"
    assert all(row["max_rel_diff"] == 0.0 for row in report["rows"])
    assert "statistics PASS" in capsys.readouterr().out


def test_unknown_run_id_is_one_line_exit_2(tracked_pair, tmp_path, capsys):
    unknown = "0123456789abcdef0123456789abcdef"
    capsys.readouterr()
    assert _compare(tmp_path, unknown, tracked_pair["train_run_id"], "--tracking-uri",
                    tracked_pair["uri"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("python -m tracking.compare: error:") and unknown in lines[0]
    assert "Traceback" not in captured.err and captured.out == ""
    assert not (tmp_path / "cmp").exists()


def test_inventory_lists_model_with_sha256_and_producer(tracked_pair, capsys):
    root = tracked_pair["root"]
    assert inventory.cli_main([str(root)]) == 0
    path = root / "analysis" / "artifact_inventory.txt"
    assert capsys.readouterr().out.strip() == str(path)
    rows = {}
    for line in path.read_text().splitlines():
        if line.startswith("#") or line.startswith("path "):
            continue
        name, size, digest, producer = line.split(maxsplit=3)
        rows[name] = (int(size), digest, producer)
    model = tracked_pair["out"] / "model.pt"
    size, digest, producer = rows["out/model.pt"]
    assert size == model.stat().st_size
    assert digest == hashlib.sha256(model.read_bytes()).hexdigest()
    assert "ptycho_torch.train" in producer
    assert "ptycho_torch.inference" in rows["inf/reconstruction.npz"][2]
    assert "ptycho_torch.inference" in rows["inf/analysis/torch_patch_stats.json"][2]
    assert "ptycho_torch.train" in rows["out/analysis/torch_patch_grid.png"][2]
    assert "analysis/artifact_inventory.txt" not in rows  # never lists itself


def test_inventory_of_a_missing_folder_is_exit_2(tmp_path, capsys):
    assert inventory.cli_main([str(tmp_path / "nope")]) == 2
    assert "is not a directory" in capsys.readouterr().err


# -- pure functions --------------------------------------------------------------------------

def test_compute_patch_stats_known_values():
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]],
                      [[[0.0, 0.0], [0.0, 8.0]]]])  # (2, 1, 2, 2): two 2x2 patches
    stats = compute_patch_stats(x)
    per = stats["per_patch"]
    assert stats["n_patches"] == 2
    assert per["mean"] == pytest.approx([2.5, 2.0])
    assert per["var_zero_mean"] == pytest.approx([1.25, 12.0])  # population
    assert per["var"] == pytest.approx([5 / 3, 16.0])  # unbiased (n - 1 = 3)
    assert per["min"] == pytest.approx([1.0, 0.0])
    assert per["max"] == pytest.approx([4.0, 8.0])
    assert stats["global_mean"] == pytest.approx(18 / 8)
    assert stats["global_std"] == pytest.approx(math.sqrt(94 / 8 - (18 / 8) ** 2))
    assert stats["var_zero_mean"] == pytest.approx((1.25 + 12.0) / 2)
    assert (stats["min"], stats["max"]) == (0.0, 8.0)
    assert all(isinstance(v, float) for v in per["mean"])


def test_compute_patch_stats_edge_cases():
    constant = compute_patch_stats(torch.full((3, 4, 4), 7.0))
    assert constant["per_patch"]["var"] == [0.0, 0.0, 0.0]
    assert constant["var_zero_mean"] == 0.0 and constant["global_std"] == 0.0
    single = compute_patch_stats(torch.tensor([[[5.0]]]))  # 1x1 patch: no n - 1 = 0 division
    assert single["per_patch"]["var"] == [0.0] and single["global_mean"] == 5.0
    many = compute_patch_stats(torch.arange(300 * 4, dtype=torch.float32).reshape(300, 2, 2))
    assert many["n_patches"] == 300
    assert len(many["per_patch"]["mean"]) == MAX_PER_PATCH
    assert many["max"] == 1199.0  # batch statistics use every patch
    assert many["global_mean"] == pytest.approx(1199 / 2)


def test_relative_difference():
    assert compare.relative_difference(1.25, 1.0) == 0.25
    assert compare.relative_difference(0.75, 1.0) == 0.25
    assert compare.relative_difference(-2.0, -1.0) == 1.0
    assert compare.relative_difference(0.0, 0.0) == 0.0
    assert compare.relative_difference(1.0, 0.0) > 1e20  # any change from zero fails


def test_compare_verdicts_on_hand_made_columns():
    columns = {"a": {"train/physics_scale": 125.0, "train/x": 1.0, "train/y": 2.0, "a_only": 1.0},
               "b": {"train/physics_scale": 125.0, "train/x": 1.25, "train/y": 3.0, "b_only": 1.0},
               "c": {"train/physics_scale": 100.0, "train/x": 0.9, "train/y": 2.0}}
    rows = {row["statistic"]: row for row in compare.compare(columns, tolerance=0.25)}
    assert set(rows) == {"train/physics_scale", "train/x", "train/y"}  # common keys only
    assert rows["train/x"]["verdict"] == "PASS"  # 0.25 is within a 0.25 tolerance
    assert rows["train/x"]["max_rel_diff"] == 0.25
    assert rows["train/y"]["verdict"] == "FAIL" and rows["train/y"]["max_rel_diff"] == 0.5
    assert rows["train/physics_scale"]["max_rel_diff"] == pytest.approx(0.2)
    assert rows["train/physics_scale"]["parity_key"] and not rows["train/x"]["parity_key"]
    assert rows["train/x"]["values"] == {"a": 1.0, "b": 1.25, "c": 0.9}
    strict = {r["statistic"]: r["verdict"] for r in compare.compare(columns, tolerance=0.1)}
    assert strict == {"train/physics_scale": "FAIL", "train/x": "FAIL", "train/y": "FAIL"}
    only_x = compare.compare(columns, tolerance=0.25, pattern=r"/x$")
    assert [r["statistic"] for r in only_x] == ["train/x"]


def test_summarize_records_means_over_batches():
    records = [{"stage_name": "train", "physics_scale": 2.0, "global_mean": 1.0,
                "stages": {"input_raw": {"global_mean": 1.0, "min": 0.0, "per_patch": {}}}},
               {"stage_name": "train", "physics_scale": 2.0, "global_mean": 3.0,
                "stages": {"input_raw": {"global_mean": 5.0, "min": -2.0}}},
               {"stage_name": "val", "global_mean": 10.0, "stages": {}}]
    assert compare.summarize_records(records) == {
        "train/physics_scale": 2.0, "train/global_mean": 2.0,
        "train/input_raw/global_mean": 3.0, "train/input_raw/min": -1.0,
        "val/global_mean": 10.0}
