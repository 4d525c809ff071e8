"""Train and inference CLIs in-process on NPZ stubs: outputs, patch stats, bad input."""

from __future__ import annotations

import json
import logging

import pytest

from ptycho_torch import inference, train
from tests.conftest import write_random_stub


def _patch_stats_lines(caplog, stage_name: str) -> list[dict]:
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("PATCH_STATS ")]
    records = [json.loads(line[len("PATCH_STATS "):]) for line in lines]
    return [r for r in records if r["stage_name"] == stage_name]


def _train(tmp_path, data, out, *extra):
    argv = ["--train_data_file", str(data), "--output_dir", str(out), "--max_epochs", "1",
            "--gridsize", "2", "--batch_size", "3", "--logger", "none", "--quiet",
            *extra]
    return train.cli_main(argv)


class TestPatchStatsCLI:
    @pytest.mark.parametrize("limit", [1, 2, 5])
    def test_patch_stats_dump(self, tmp_path, caplog, limit):
        data = tmp_path / "train.npz"
        write_random_stub(data, n=10, big_n=16)
        out = tmp_path / "run"
        caplog.set_level(logging.INFO)
        assert _train(tmp_path, data, out, "--log-patch-stats", "--patch-stats-limit",
                      str(limit)) == 0
        stats_path = out / "analysis" / "torch_patch_stats.json"
        grid_path = out / "analysis" / "torch_patch_grid.png"
        assert stats_path.is_file()
        assert grid_path.is_file() and grid_path.stat().st_size > 1000
        records = json.loads(stats_path.read_text())
        first = records[0]
        for key in ("global_mean", "global_std", "var_zero_mean", "stage_name", "batch_idx"):
            assert key in first
        assert first["var_zero_mean"] > 1e-6
        assert first["global_mean"] != 0
        assert set(first["stages"]) == {"input_raw", "input_normalized", "object_amplitude",
                                        "object_phase", "predicted_amplitude"}
        # 10 groups: 1 validation, 9 train in batches of 3 -> 3 train batches in one epoch
        n_train_batches = 3
        train_records = [r for r in records if r["stage_name"] == "train"]
        assert len(train_records) == min(limit, n_train_batches)
        assert [r["batch_idx"] for r in train_records] == list(range(len(train_records)))
        assert len(_patch_stats_lines(caplog, "train")) == min(limit, n_train_batches)
        assert len([r for r in records if r["stage_name"] == "val"]) == 1

        caplog.clear()
        test_data = tmp_path / "test.npz"
        write_random_stub(test_data, n=10, big_n=16, seed=1)
        dump = tmp_path / "debug"
        argv = ["--model_path", str(out), "--test_data", str(test_data), "--output_dir",
                str(tmp_path / "inference"), "--debug-dump", str(dump), "--log-patch-stats",
                "--patch-stats-limit", str(limit), "--inference-batch-size", "4",
                "--logger", "none", "--quiet", "--accelerator", "cpu"]
        assert inference.cli_main(argv) == 0
        n_inference_batches = 3  # 10 groups in batches of 4
        for name in ("patch_amplitudes.png", "offsets.json", "stats.json", "canvas.json",
                     "reconstruction.npz", "torch_patch_stats.json", "torch_patch_grid.png"):
            assert (dump / name).is_file(), name
        inference_records = json.loads((dump / "torch_patch_stats.json").read_text())
        assert len(inference_records) == min(limit, n_inference_batches)
        assert inference_records[0]["var_zero_mean"] > 1e-6
        assert "stitch_crop_amplitude" in inference_records[0]["stages"]
        assert len(_patch_stats_lines(caplog, "inference")) == min(limit, n_inference_batches)
        offsets = json.loads((dump / "offsets.json").read_text())
        assert offsets["count"] == 40
        canvas = json.loads((dump / "canvas.json").read_text())
        assert canvas["patch_size"] == 16 and canvas["n_patch_slots"] == 40

    @pytest.mark.parametrize("value", ["0", "-3"])
    def test_patch_stats_limit_must_be_positive(self, tmp_path, capsys, value):
        data = tmp_path / "train.npz"
        write_random_stub(data, n=10, big_n=16)
        with pytest.raises(SystemExit) as info:
            _train(tmp_path, data, tmp_path / "run", "--log-patch-stats",
                   "--patch-stats-limit", value)
        assert info.value.code == 2
        assert "--patch-stats-limit" in capsys.readouterr().err
        assert not (tmp_path / "run").exists()

    def test_flag_off_never_enters_the_recorder(self, tmp_path, monkeypatch):
        from tracking import patch_stats

        def boom(*args, **kwargs):
            raise AssertionError("recorder entered with --log-patch-stats off")

        monkeypatch.setattr(patch_stats.PatchStatsRecorder, "__init__", boom)
        monkeypatch.setattr(patch_stats, "compute_patch_stats", boom)
        data = tmp_path / "train.npz"
        write_random_stub(data, n=10, big_n=16)
        assert _train(tmp_path, data, tmp_path / "run") == 0
        assert not (tmp_path / "run" / "analysis").exists()


def test_ten_random_points_train_and_infer(tmp_path):
    data = tmp_path / "train.npz"
    write_random_stub(data, n=10, big_n=16)
    out = tmp_path / "run"
    assert _train(tmp_path, data, out) == 0
    assert (out / "model.pt").is_file() and (out / "config.json").is_file()
    config = json.loads((out / "config.json").read_text())
    assert config["data"]["gridsize"] == 2 and config["model"]["n_channels"] == 4
    argv = ["--model_path", str(out), "--test_data", str(data), "--output_dir",
            str(tmp_path / "inference"), "--logger", "none", "--quiet"]
    assert inference.cli_main(argv) == 0
    assert (tmp_path / "inference" / "reconstruction.npz").is_file()
    assert not (tmp_path / "inference" / "metrics.json").exists()  # no objectGuess


def test_max_time_stops_training_early_and_keeps_outputs(tmp_path):
    data = tmp_path / "train.npz"
    write_random_stub(data, n=10, big_n=16)
    out = tmp_path / "run"
    assert _train(tmp_path, data, out, "--max_epochs", "100000", "--max-time", "0.02") == 0
    summary = json.loads((out / "train_summary.json").read_text())
    assert 0 < summary["global_step"] < 3 * 100000  # stopped by the 1.2 s budget
    assert (out / "model.pt").is_file()
    assert json.loads((out / "config.json").read_text())["training"]["max_time_minutes"] == 0.02


@pytest.mark.parametrize("case", ["missing_key", "not_npz", "directory", "too_many_groups"])
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path, capsys, case):
    data = tmp_path / "train.npz"
    extra = []
    if case == "missing_key":
        write_random_stub(data, n=10, big_n=16, probeGuess=None)
    elif case == "not_npz":
        data.write_text("not an archive")
    elif case == "directory":
        data = tmp_path
    else:
        write_random_stub(data, n=10, big_n=16)
        extra = ["--n_images", "50"]
    out = tmp_path / "run"
    assert _train(tmp_path, data, out, *extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error:" in err[0] and "Traceback" not in err[0]
    assert not out.exists()


def test_gpu_accelerator_without_cuda_is_refused(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible")
    data = tmp_path / "train.npz"
    write_random_stub(data, n=10, big_n=16)
    assert _train(tmp_path, data, tmp_path / "run", "--accelerator", "gpu") == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_unknown_strategy_is_one_line_exit_2_nothing_written(tmp_path, capsys):
    data = tmp_path / "train.npz"
    write_random_stub(data, n=10, big_n=16)
    out = tmp_path / "run"
    assert _train(tmp_path, data, out, "--strategy", "bogus") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--strategy 'bogus'" in err[0]
    assert not out.exists()
