"""Tracked runs against real stores: what a train and an inference run leave in MLflow
(sqlite) and TensorBoard, and how runs end (FINISHED, FAILED, KILLED), fail fast, share a
store, and survive tracking write failures."""

from __future__ import annotations

import hashlib
import json
import logging
import signal
import subprocess
import time

import pytest
import torch

from ptycho_torch import inference, train
from tests.conftest import write_random_stub
from tests.tracking.conftest import (
    EXPERIMENT,
    client_for,
    free_port,
    inference_argv,
    run_id_of,
    sqlite_uri,
    subprocess_env,
    train_argv,
    train_command,
)

ENV_TAGS = ("git_commit", "git_dirty", "torch_version", "cuda_version", "device_name", "seed",
            "command_line")


# -- what a train run and an inference run record ------------------------------------------

def test_train_run_in_sqlite_store(tracked_pair):
    client = client_for(tracked_pair["uri"])
    run_id = tracked_pair["train_run_id"]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.info.experiment_id == tracked_pair["experiment_id"]

    params = run.data.params
    assert params["data.gridsize"] == "2"
    assert params["model.loss_mode"] == "poisson"
    assert params["training.max_epochs"] == "2"
    assert params["training.batch_size"] == "3"
    assert float(params["physics_scale"]) == pytest.approx(125.0)  # sqrt(1e6) / (16 / 2)

    tags = run.data.tags
    for key in ENV_TAGS:
        assert tags.get(key), f"tag {key} missing or empty"
    assert tags["run_kind"] == "train"
    assert tags["git_dirty"] in ("true", "false")
    assert tags["torch_version"] == torch.__version__
    assert tags["seed"] == "0"
    assert "ptycho_torch.train" in tags["command_line"]
    assert str(tracked_pair["data"]) in tags["command_line"]
    sha = hashlib.sha256(tracked_pair["data"].read_bytes()).hexdigest()
    assert tags["dataset.training.sha256"] == sha

    history = client.get_metric_history(run_id, "patch/train/input_normalized/global_mean")
    assert [m.step for m in history] == [0]  # limit 1: the first train batch only
    assert history[0].value > 0

    # 10 groups -> 9 train (3 batches of 3) + 1 val; 2 epochs = global steps 0..5.
    # log_every_n_steps=5 logs the step loss once (step 4); the epoch loss at each epoch end.
    epoch_loss = client.get_metric_history(run_id, "train_loss_epoch")
    assert sorted(m.step for m in epoch_loss) == [2, 5]
    step_loss = client.get_metric_history(run_id, "train_loss_step")
    assert [m.step for m in step_loss] == [4]
    assert [m.step for m in client.get_metric_history(run_id, "val_loss")] == [2, 5]

    top = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.json", "train_summary.json", "analysis"} <= top
    analysis = {a.path for a in client.list_artifacts(run_id, "analysis")}
    assert analysis == {"analysis/torch_patch_stats.json", "analysis/torch_patch_grid.png"}
    stored = json.loads((tracked_pair["out"] / "analysis" / "torch_patch_stats.json").read_text())
    assert stored[0]["stage_name"] == "train"

    datasets = run.inputs.dataset_inputs
    assert len(datasets) == 1
    assert datasets[0].dataset.digest == sha[:36]
    assert datasets[0].dataset.name == "train.npz"
    assert {(t.key, t.value) for t in datasets[0].tags} == {("mlflow.data.context", "training")}


def test_inference_run_links_to_its_training_run(tracked_pair):
    client = client_for(tracked_pair["uri"])
    run_id = tracked_pair["inference_run_id"]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["run_kind"] == "inference"
    assert run.data.tags["train_run_id"] == tracked_pair["train_run_id"]
    assert run_id != tracked_pair["train_run_id"]
    history = client.get_metric_history(run_id, "patch/inference/input_normalized/global_mean")
    assert [m.step for m in history] == [0]
    assert "patch/inference/stitch_crop_amplitude/var_zero_mean" in run.data.metrics
    top = {a.path for a in client.list_artifacts(run_id)}
    assert {"reconstruction.png", "reconstruction.npz"} <= top
    analysis = {a.path for a in client.list_artifacts(run_id, "analysis")}
    assert "analysis/torch_patch_stats.json" in analysis
    sha = hashlib.sha256(tracked_pair["data"].read_bytes()).hexdigest()
    assert [d.dataset.digest for d in run.inputs.dataset_inputs] == [sha[:36]]


def _event_tags(logdir) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "histograms": 0,
                                                               "images": 0})
    accumulator.Reload()
    return accumulator.Tags()


def test_tensorboard_event_files(tracked_pair):
    run = client_for(tracked_pair["uri"]).get_run(tracked_pair["train_run_id"])
    folder = f"{run.info.run_name}-{run.info.run_id[:8]}"  # one folder per run
    logdir = tracked_pair["root"] / "mlruns" / "tensorboard" / EXPERIMENT / folder
    assert run.data.tags["tensorboard_logdir"] == str(logdir)
    assert list(logdir.glob("events.out.tfevents.*"))
    tags = _event_tags(logdir)
    scalars = set(tags["scalars"])
    assert "patch/train/input_normalized/global_mean" in scalars
    assert {"train_loss_epoch", "val_loss"} <= scalars
    assert "patch/train/object_amplitude/var_zero_mean_per_patch" in tags["histograms"]
    assert "images/torch_patch_grid" in tags["images"]

    inference_run = client_for(tracked_pair["uri"]).get_run(tracked_pair["inference_run_id"])
    inference_tags = _event_tags(inference_run.data.tags["tensorboard_logdir"])
    assert "patch/inference/stitch_crop_amplitude/var_zero_mean_per_patch" in \
        inference_tags["histograms"]
    assert {"images/torch_patch_grid", "images/reconstruction"} <= set(inference_tags["images"])


# -- how runs end ----------------------------------------------------------------------------

def test_run_that_raises_ends_failed(tmp_path, monkeypatch):
    from ptycho_torch.model import PtychoLightning

    def broken_step(self, batch, batch_idx):  # fault injection; the tracker stays real
        raise RuntimeError("injected training failure")

    monkeypatch.setattr(PtychoLightning, "training_step", broken_step)
    data, out, uri = tmp_path / "train.npz", tmp_path / "out", sqlite_uri(tmp_path)
    write_random_stub(data, n=10, big_n=16)
    with pytest.raises(RuntimeError, match="injected training failure"):
        train.cli_main(train_argv(data, out, uri, epochs=1))
    run = client_for(uri).get_run(run_id_of(out))
    assert run.info.status == "FAILED"
    assert run.info.end_time is not None


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupted_run_ends_killed(tmp_path, signum):
    data, out, uri = tmp_path / "train.npz", tmp_path / "out", sqlite_uri(tmp_path)
    write_random_stub(data, n=10, big_n=16)
    log = (tmp_path / "train.log").open("wb")
    # a shell's background job starts with SIGINT ignored, and Python keeps an inherited
    # SIG_IGN: give the child the default, as a terminal would
    proc = subprocess.Popen(train_command(data, out, uri, epochs=200), cwd=tmp_path,
                            env=subprocess_env(), stdout=log, stderr=subprocess.STDOUT,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        run_id, deadline = None, time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, "train exited before the signal: " + \
                (tmp_path / "train.log").read_text()[-2000:]
            if run_id is None and (out / "tracking.json").is_file():
                run_id = run_id_of(out)  # written after the run exists in the store
            if run_id is not None:
                run = client_for(uri).get_run(run_id)
                if run.info.status == "RUNNING" and run.data.metrics:
                    break
            time.sleep(0.3)
        else:
            pytest.fail("no RUNNING run with a metric within 60 s")
        proc.send_signal(signum)
        returncode = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        log.close()
    assert returncode != 0
    run = client_for(uri).get_run(run_id)
    assert run.info.status == "KILLED", (tmp_path / "train.log").read_text()[-2000:]
    assert run.info.end_time is not None


# -- fail fast, share a store, survive write failures --------------------------------------

def test_unreachable_server_fails_fast_with_one_line(tmp_path):
    data, out = tmp_path / "train.npz", tmp_path / "out"
    write_random_stub(data, n=10, big_n=16)
    uri = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = subprocess.run(train_command(data, out, uri), cwd=tmp_path, env=subprocess_env(),
                            capture_output=True, text=True, timeout=60)
    seconds = time.monotonic() - started
    assert seconds < 15, f"took {seconds:.1f} s"
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert uri in lines[0] and lines[0].startswith("python -m ptycho_torch.train: error:")
    assert not out.exists()
    assert not (tmp_path / "mlruns").exists()


def test_unreachable_server_inference_writes_nothing(tracked_pair, tmp_path, capsys):
    uri = f"http://127.0.0.1:{free_port()}"
    out = tmp_path / "inf"
    started = time.monotonic()
    rc = inference.cli_main(inference_argv(tracked_pair["out"], tracked_pair["data"], out, uri))
    assert time.monotonic() - started < 15
    assert rc == 2
    err = [line for line in capsys.readouterr().err.splitlines() if uri in line]
    assert len(err) == 1 and "error:" in err[0]
    assert not out.exists()


def test_two_runs_write_to_one_store_at_once(tmp_path):
    data, uri = tmp_path / "train.npz", sqlite_uri(tmp_path)
    write_random_stub(data, n=10, big_n=16)
    # Both are the first runs on a fresh sqlite file: creating its tables must not race.
    outs = [tmp_path / "out1", tmp_path / "out2"]
    logs = [(tmp_path / f"train{i}.log").open("wb") for i in (1, 2)]
    procs = [subprocess.Popen(train_command(data, out, uri, epochs=1), cwd=tmp_path,
                              env=subprocess_env(), stdout=log, stderr=subprocess.STDOUT)
             for out, log in zip(outs, logs, strict=True)]
    try:
        codes = [proc.wait(timeout=120) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
        for log in logs:
            log.close()
    tails = [(tmp_path / f"train{i}.log").read_text()[-2000:] for i in (1, 2)]
    assert codes == [0, 0], tails
    client = client_for(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_id for r in runs) == sorted(run_id_of(out) for out in outs)
    assert [r.info.status for r in runs] == ["FINISHED", "FINISHED"]
    for run in runs:
        assert "patch/train/input_normalized/global_mean" in run.data.metrics


def test_tracking_write_failure_mid_run_keeps_local_files(tmp_path, monkeypatch, caplog):
    from mlflow.exceptions import MlflowException
    from mlflow.tracking.client import MlflowClient

    real_log_batch = MlflowClient.log_batch
    calls = {"n": 0}

    def flaky_log_batch(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] <= 2:
            return real_log_batch(self, *args, **kwargs)
        raise MlflowException("injected")

    monkeypatch.setattr(MlflowClient, "log_batch", flaky_log_batch)
    caplog.set_level(logging.INFO)
    data, out, uri = tmp_path / "train.npz", tmp_path / "out", sqlite_uri(tmp_path)
    write_random_stub(data, n=10, big_n=16)
    assert train.cli_main(train_argv(data, out, uri, epochs=1)) == 0
    assert calls["n"] > 3  # writes kept being attempted after the first failure
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING
                and "tracking write failed" in r.getMessage()]
    assert warnings, "no 'tracking write failed' warning"
    assert all("injected" in r.getMessage() for r in warnings)

    state = torch.load(out / "model.pt", map_location="cpu", weights_only=True)
    assert state and all(isinstance(v, torch.Tensor) for v in state.values())
    records = json.loads((out / "analysis" / "torch_patch_stats.json").read_text())
    assert {r["stage_name"] for r in records} == {"train", "val"}
    png = (out / "analysis" / "torch_patch_grid.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    checkpoints = sorted((out / "checkpoints").glob("*.ckpt"))
    assert checkpoints
    checkpoint = torch.load(checkpoints[0], map_location="cpu", weights_only=False)
    assert checkpoint["state_dict"]
    # the run itself still ends FINISHED (set_terminated is not a log_batch write)
    assert client_for(uri).get_run(run_id_of(out)).info.status == "FINISHED"



def test_credentials_hidden_in_the_unreachable_error_line(tmp_path, capsys):
    """An unreachable server URI with credentials: the one error line hides the secret."""
    uri = f"http://user:hunter2@127.0.0.1:{free_port()}"
    data = tmp_path / "train.npz"
    write_random_stub(data, n=10, big_n=16)
    assert train.cli_main(train_argv(data, tmp_path / "out", uri)) == 2
    err = capsys.readouterr().err
    assert "hunter2" not in err and "***@127.0.0.1" in err
