"""Faults and scale-out: a training process killed mid-run leaves only readable files,
--resume finishes it like an uninterrupted run in the same MLflow run, and two-process DDP
on CPU (gloo) gives one run and one set of patch-stats files."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ptycho_torch import train, workflows
from tests.conftest import write_random_stub
from tests.tracking.conftest import (
    EXPERIMENT,
    client_for,
    run_id_of,
    sqlite_uri,
    subprocess_env,
    train_argv,
    train_command,
)

EPOCHS = 6
TEMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.\w+$")  # tracking.files.atomic_path's names


def check_every_file_readable(folder: Path) -> list[str]:
    """Open every file under ``folder`` by its kind; return the relative names checked.
    Hidden files are allowed only if named like atomic_path's temporaries (a kill during a
    write may leave one; the real file beside it is whole)."""
    from PIL import Image

    checked = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = path.relative_to(folder).as_posix()
        if path.name.startswith("."):
            assert TEMP_NAME.match(path.name), f"unexpected hidden file {name}"
            continue
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".png":
            with Image.open(path) as image:
                image.verify()
        elif path.suffix in (".ckpt", ".pt"):
            torch.load(path, map_location="cpu", weights_only=True)
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                for key in npz.files:
                    npz[key]
        else:
            pytest.fail(f"no reader for {name}")
        checked.append(name)
    return checked


def layout(folder: Path) -> set[str]:
    """Relative file names, with step-numbered checkpoint names folded together."""
    return {re.sub(r"epoch=\d+-step=\d+", "epoch=E-step=S", p.relative_to(folder).as_posix())
            for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def scan(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("resume") / "train.npz"
    write_random_stub(path, n=40, big_n=16)
    return path


@pytest.mark.slow
def test_killed_run_leaves_readable_files_and_resume_finishes_it(scan, tmp_path, caplog,
                                                                  monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = sqlite_uri(tmp_path)
    reference = tmp_path / "uninterrupted"
    assert train.cli_main(train_argv(scan, reference, None, "--logger", "none",
                                     epochs=EPOCHS)) == 0
    expected = json.loads((reference / "train_summary.json").read_text())

    out = tmp_path / "out"
    log_path = tmp_path / "killed.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(train_command(scan, out, uri, epochs=EPOCHS), cwd=tmp_path,
                                env=subprocess_env(), stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 120
            while not (out / "checkpoints" / "last.ckpt").is_file():
                assert proc.poll() is None, "train ended before it could be killed:\n" + \
                    log_path.read_text()[-2000:]
                assert time.monotonic() < deadline, "no checkpoint within 120 s"
                time.sleep(0.02)
            proc.send_signal(signal.SIGKILL)  # no handler runs: the harshest stop
            assert proc.wait(timeout=30) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)

    checked = check_every_file_readable(out)
    assert "checkpoints/last.ckpt" in checked and "config.json" in checked
    assert not (out / "model.pt").exists(), "the kill came after training had finished"
    killed_at = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["epoch"]
    run_id = run_id_of(out)
    client = client_for(uri)
    assert client.get_run(run_id).info.status == "RUNNING"  # SIGKILL: nobody could end it

    caplog.clear()
    with caplog.at_level("INFO"):
        assert train.cli_main(train_argv(scan, out, uri, "--resume", epochs=EPOCHS)) == 0
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["epochs"] == expected["epochs"] == EPOCHS
    assert summary["global_step"] == expected["global_step"]
    assert summary["resumed_from"].endswith("last.ckpt")
    assert killed_at < EPOCHS - 1
    check_every_file_readable(out)

    # the same MLflow run went on and finished; its loss history spans both processes
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.run_id for r in runs] == [run_id]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["resume_count"] == "1"
    assert run.data.tags["resume.1.previous_status"] == "RUNNING"
    epochs_logged = {int(m.value) for m in client.get_metric_history(run_id, "epoch")}
    assert epochs_logged == set(range(EPOCHS))
    assert summary["mlflow_run_id"] == run_id
    # both processes wrote into the run's one TensorBoard folder
    tensorboard = tmp_path / "mlruns" / "tensorboard" / EXPERIMENT
    assert [p.name for p in tensorboard.iterdir()] == [f"{run.info.run_name}-{run_id[:8]}"]
    assert run.data.tags["tensorboard_logdir"].endswith(f"{run.info.run_name}-{run_id[:8]}")

    # patch-stats limits count from the first start: nothing instrumented again
    assert "PATCH_STATS" not in caplog.text
    records = json.loads((out / "analysis" / "torch_patch_stats.json").read_text())
    assert sorted(r["stage_name"] for r in records) == ["train", "val"]


def test_resume_without_a_checkpoint_is_one_line_exit_2(scan, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "never_started"
    assert train.cli_main(train_argv(scan, out, None, "--resume", "--logger", "none")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--resume" in err[0] and "last.ckpt" in err[0]
    assert not out.exists()


def test_resume_with_other_model_flags_is_refused(scan, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    assert train.cli_main(train_argv(scan, out, None, "--logger", "none", epochs=1)) == 0
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    argv = train_argv(scan, out, None, "--resume", "--logger", "none", "--n-filters-scale",
                      "1", epochs=2)
    assert train.cli_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.n_filters_scale" in err[0]
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before


def test_resume_can_extend_max_epochs(scan, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = sqlite_uri(tmp_path)
    out = tmp_path / "out"
    assert train.cli_main(train_argv(scan, out, uri, epochs=1)) == 0
    first = json.loads((out / "train_summary.json").read_text())
    assert train.cli_main(train_argv(scan, out, uri, "--resume", epochs=3)) == 0
    second = json.loads((out / "train_summary.json").read_text())
    assert (first["epochs"], second["epochs"]) == (1, 3)
    assert second["global_step"] == 3 * first["global_step"]
    run = client_for(uri).get_run(run_id_of(out))
    # MLflow keeps a param's first value; the new one is a tag
    assert run.data.params["training.max_epochs"] == "1"
    assert run.data.tags["resume.changed.training.max_epochs"] == "3"


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    """A save that dies half-way leaves the previous checkpoint whole and no temp file."""
    io = workflows.AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"epoch": 1, "w": torch.ones(3)}, path)

    def dies_half_way(obj, target, *args, **kwargs):
        Path(target).write_bytes(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk quota exceeded")

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(OSError, match="quota"):
        io.save_checkpoint({"epoch": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_tracks_once(scan, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = sqlite_uri(tmp_path)
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    assert train.cli_main(train_argv(scan, single, uri, "--run-name", "single")) == 0
    command = train_command(scan, ddp, uri, "--accelerator", "cpu", "--devices", "2",
                            "--strategy", "ddp", "--run-name", "ddp")
    done = subprocess.run(command, cwd=tmp_path, env=subprocess_env(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    # two processes trained (each its half of the groups), one of them tracked
    single_summary = json.loads((single / "train_summary.json").read_text())
    ddp_summary = json.loads((ddp / "train_summary.json").read_text())
    steps_per_epoch = -(-single_summary["n_train_groups"] // 2 // 3)  # per rank, batch 3
    assert ddp_summary["global_step"] == 2 * steps_per_epoch
    assert done.stderr.count("training on ") == 2
    client = client_for(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.run_kind = 'train'")
    assert sorted(r.info.run_name for r in runs) == ["ddp", "single"]
    ddp_run = next(r for r in runs if r.info.run_name == "ddp")
    assert ddp_run.info.status == "FINISHED" and ddp_run.info.run_id == run_id_of(ddp)
    assert "train_loss_epoch" in ddp_run.data.metrics

    # rank 0 alone recorded patch statistics, and the files are laid out as in one process
    assert done.stderr.count("PATCH_STATS ") == 2  # limit 1: one train, one val record
    records = json.loads((ddp / "analysis" / "torch_patch_stats.json").read_text())
    assert sorted(r["stage_name"] for r in records) == ["train", "val"]
    assert layout(ddp) == layout(single)
    tensorboard = tmp_path / "mlruns" / "tensorboard" / EXPERIMENT
    assert sorted(p.name for p in tensorboard.iterdir()) == sorted(
        f"{r.info.run_name}-{r.info.run_id[:8]}" for r in runs)
    check_every_file_readable(ddp)
