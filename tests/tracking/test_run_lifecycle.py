"""What a tracked training run holds besides losses: its own TensorBoard folder, the HParams
session, system metrics, per-epoch timing and memory, numerics tags, the gradient norm,
periodic patch statistics, and its model (pulled back by ``runs:/`` and ``models:/`` from a
real ``mlflow server``). Real sqlite stores, real event files, real servers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from ptycho_torch import inference, train
from tests.conftest import write_random_stub
from tests.tracking.conftest import (
    EXPERIMENT,
    client_for,
    inference_argv,
    run_id_of,
    sqlite_uri,
    train_argv,
)
from tests.tracking.test_servers import mlflow_server

pytestmark = pytest.mark.slow
EPOCHS = 4


@pytest.fixture(scope="module")
def twin_runs(tmp_path_factory) -> dict:
    """Two 4-epoch trainings with the same --run-name into one sqlite store (the second
    with periodic patch statistics every 2 epochs), system metrics sampled every 0.2 s."""
    root = tmp_path_factory.mktemp("twins")
    data = root / "train.npz"
    write_random_stub(data, n=24, big_n=16)
    uri = sqlite_uri(root)
    outs = [root / "first", root / "second"]
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        for out, extra in zip(outs, ([], ["--patch-stats-every-epochs", "2"]), strict=True):
            assert train.cli_main(train_argv(data, out, uri, "--run-name", "same",
                                             "--system-metrics-interval", "0.2", *extra,
                                             epochs=EPOCHS)) == 0
    client = client_for(uri)
    runs = [client.get_run(run_id_of(out)) for out in outs]
    return {"root": root, "uri": uri, "outs": outs, "runs": runs, "client": client}


def _event_scalars(folder: Path) -> EventAccumulator:
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_two_runs_with_one_name_get_two_tensorboard_folders(twin_runs):
    tensorboard = twin_runs["root"] / "mlruns" / "tensorboard" / EXPERIMENT
    names = sorted(p.name for p in tensorboard.iterdir())
    assert names == sorted(f"same-{r.info.run_id[:8]}" for r in twin_runs["runs"])
    for run in twin_runs["runs"]:
        folder = Path(run.data.tags["tensorboard_logdir"])
        assert folder.name == f"same-{run.info.run_id[:8]}"
        losses = _event_scalars(folder).Scalars("train_loss_epoch")
        # one point per epoch of this run only (the bug: both runs' points in one folder)
        assert len(losses) == EPOCHS
        assert len({event.step for event in losses}) == EPOCHS


def test_hparams_tab_lists_each_run_with_its_config_and_final_metrics(twin_runs):
    for run in twin_runs["runs"]:
        acc = _event_scalars(Path(run.data.tags["tensorboard_logdir"]))
        content = acc.PluginTagToContent("hparams")
        start = plugin_data_pb2.HParamsPluginData.FromString(
            content["_hparams_/session_start_info"]).session_start_info
        assert start.hparams["training.batch_size"].number_value == 3
        assert start.hparams["data.gridsize"].number_value == 2
        # no per-run experiment summary: TensorBoard builds the tab's columns from all runs
        assert "_hparams_/experiment" not in content
        assert {"hparams/train_loss_epoch", "hparams/val_loss"} <= set(acc.Tags()["scalars"])
        # the metric the tab shows is the run's final loss, as MLflow has it
        final = acc.Scalars("hparams/train_loss_epoch")[-1].value
        assert final == pytest.approx(run.data.metrics["train_loss_epoch"], rel=1e-6)


def test_system_metrics_timing_numerics_and_grad_norm_are_in_the_run(twin_runs):
    client = twin_runs["client"]
    run = twin_runs["runs"][0]
    run_id = run.info.run_id
    cpu = client.get_metric_history(run_id, "system/cpu_utilization_percentage")
    memory = client.get_metric_history(run_id, "system/system_memory_usage_megabytes")
    assert len(cpu) >= 1 and len(memory) >= 1
    assert all(0 <= m.value <= 100 for m in cpu) and all(m.value > 0 for m in memory)
    epoch_seconds = client.get_metric_history(run_id, "perf/epoch_seconds")
    rate = client.get_metric_history(run_id, "perf/groups_per_second")
    assert len(epoch_seconds) == len(rate) == EPOCHS
    summary = json.loads((twin_runs["outs"][0] / "train_summary.json").read_text())
    assert all(m.value > 0 for m in epoch_seconds)
    # groups/s is the training groups of one epoch over its wall time
    for seconds, groups_per_s in zip(epoch_seconds, rate, strict=True):
        assert groups_per_s.value * seconds.value == pytest.approx(summary["n_train_groups"],
                                                                   rel=1e-6)
    assert run.data.metrics["perf/peak_host_rss_mb"] > 50
    assert run.data.tags["numerics.deterministic_algorithms"] == "true"
    assert run.data.tags["numerics.float32_matmul_precision"] in ("highest", "high", "medium")
    assert run.data.tags["gpu.count"] == "0" and "numerics.cudnn_version" in run.data.tags
    norms = client.get_metric_history(run_id, "grad_norm")
    assert norms and all(np.isfinite(m.value) and m.value > 0 for m in norms)


def test_patch_stats_every_epochs_records_the_whole_run(twin_runs):
    client = twin_runs["client"]
    plain, periodic = twin_runs["runs"]
    key = "patch/train/object_amplitude/var_zero_mean"
    assert [m.step for m in client.get_metric_history(plain.info.run_id, key)] == [0]
    steps = sorted(m.step for m in client.get_metric_history(periodic.info.run_id, key))
    summary = json.loads((twin_runs["outs"][1] / "train_summary.json").read_text())
    per_epoch = summary["global_step"] // EPOCHS
    # the first batch (limit 1), then epochs 2 and 4 (1-based): every 2nd, and the last
    assert steps == [0, per_epoch, 3 * per_epoch]
    records = json.loads((twin_runs["outs"][1] / "analysis" /
                          "torch_patch_stats.json").read_text())
    train_records = [r for r in records if r["stage_name"] == "train"]
    assert [r["epoch"] for r in train_records] == [0, 1, 3]
    assert [r["step"] for r in train_records] == steps
    metric = {m.step: m.value for m in client.get_metric_history(periodic.info.run_id, key)}
    assert [metric[r["step"]] for r in train_records] == pytest.approx(
        [r["var_zero_mean"] for r in train_records])


def test_model_pulled_by_runs_and_models_uri_from_a_real_server(tmp_path, monkeypatch):
    # the server proxies artifacts: uploads and downloads go over HTTP, not a shared path
    with mlflow_server(tmp_path, "--artifacts-destination", str(tmp_path / "served")) as (
            base, _):
        monkeypatch.chdir(tmp_path)
        data, out = tmp_path / "train.npz", tmp_path / "out"
        write_random_stub(data, n=12, big_n=16)
        assert train.cli_main(train_argv(data, out, base, "--register-model", "pinn",
                                         "--system-metrics-interval", "0", epochs=1)) == 0
        run_id = run_id_of(out)
        client = client_for(base)
        model_files = {a.path for a in client.list_artifacts(run_id, "model")}
        assert model_files == {"model/model.pt", "model/config.json"}
        checkpoints = {a.path for a in client.list_artifacts(run_id, "checkpoints")}
        assert "checkpoints/last.ckpt" in checkpoints
        assert client.get_model_version("pinn", "1").run_id == run_id

        local = tmp_path / "from_folder"
        assert inference.cli_main(inference_argv(out, data, local, base)) == 0
        expected = np.load(local / "reconstruction.npz")["object"]
        for uri, folder in ((f"runs:/{run_id}", "from_run"), ("models:/pinn/1", "from_model")):
            fresh = tmp_path / folder
            assert not fresh.exists()
            assert inference.cli_main(inference_argv(uri, data, fresh, base)) == 0
            got = np.load(fresh / "reconstruction.npz")["object"]
            np.testing.assert_array_equal(got, expected)
            linked = client.get_run(json.loads((fresh / "tracking.json").read_text())["run_id"])
            assert linked.data.tags["train_run_id"] == run_id
            assert linked.data.tags["model_uri"] == uri
        assert not list((tmp_path / "served").rglob("*.pkl"))  # weights and JSON only


def test_no_log_checkpoints_keeps_them_local(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data, out = tmp_path / "train.npz", tmp_path / "out"
    write_random_stub(data, n=12, big_n=16)
    uri = sqlite_uri(tmp_path)
    assert train.cli_main(train_argv(data, out, uri, "--no-log-checkpoints",
                                     "--system-metrics-interval", "0", epochs=1)) == 0
    client = client_for(uri)
    top = {a.path for a in client.list_artifacts(run_id_of(out))}
    assert "model" in top and "checkpoints" not in top
    assert (out / "checkpoints" / "last.ckpt").is_file()
    assert not client.get_run(run_id_of(out)).data.metrics.keys() & {
        "system/cpu_utilization_percentage"}


@pytest.mark.parametrize("uri, message", [
    ("runs:/0123456789abcdef0123456789abcdef", "run 0123456789abcdef0123456789abcdef not found"),
    ("models:/absent/3", "models:/absent/3 not found"),
    ("runs:/not-an-id", "expected runs:/<run id>"),
])
def test_unknown_model_uri_is_one_line_exit_2(tmp_path, capsys, monkeypatch, uri, message):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "test.npz"
    write_random_stub(data, n=12, big_n=16)
    out = tmp_path / "inf"
    assert inference.cli_main(inference_argv(uri, data, out, sqlite_uri(tmp_path))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and err[0].startswith(
        "python -m ptycho_torch.inference: error:")
    assert not out.exists()


def test_csv_logger_writes_metrics_for_train_and_inference(tmp_path, monkeypatch):
    import csv

    monkeypatch.chdir(tmp_path)
    data, out, inf = tmp_path / "train.npz", tmp_path / "out", tmp_path / "inf"
    write_random_stub(data, n=12, big_n=16)
    assert train.cli_main(train_argv(data, out, None, "--logger", "csv", epochs=1)) == 0
    assert inference.cli_main(["--model_path", str(out), "--test_data", str(data),
                               "--output_dir", str(inf), "--quiet", "--logger", "csv"]) == 0

    def columns(folder: Path) -> set[str]:
        (path,) = folder.glob("csv_logs/version_*/metrics.csv")
        with path.open() as handle:
            return set(next(csv.reader(handle)))

    assert {"train_loss_epoch", "perf/epoch_seconds"} <= columns(out)
    assert {"inference/seconds", "inference/patterns_per_s"} <= columns(inf)
    assert not (tmp_path / "mlruns").exists()  # csv alone: no MLflow store, no TensorBoard
