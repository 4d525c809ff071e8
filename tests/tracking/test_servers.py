"""Real servers: a train run tracked by an `mlflow server` (read back over its REST API), and
`tensorboard` serving a train run's event files."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.parse
import urllib.request

import pytest

from ptycho_torch import train
from tests.conftest import write_random_stub
from tests.tracking.conftest import (
    EXPERIMENT,
    free_port,
    run_id_of,
    subprocess_env,
    train_argv,
    wait_for_http,
)

pytestmark = pytest.mark.slow


@contextlib.contextmanager
def server(command: list[str], log_path, cwd, env: dict[str, str] | None = None):
    """Start a server in its own process group (``env`` added to its environment); stop
    the whole group (workers included)."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, cwd=cwd, env={**subprocess_env(), **(env or {})},
                                stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield proc
        finally:
            for sig, wait_s in ((signal.SIGTERM, 15), (signal.SIGKILL, 15)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
                try:
                    proc.wait(timeout=wait_s)
                    break
                except subprocess.TimeoutExpired:
                    continue
            with contextlib.suppress(ProcessLookupError):  # stray workers of the group
                os.killpg(proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def mlflow_server(tmp_path, *artifact_args: str, env: dict[str, str] | None = None):
    """A real ``mlflow server`` on a free 127.0.0.1 port with a sqlite store in tmp_path and
    the given flags (and ``env``); yields (base URL, process); stopped with its workers."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port",
               str(port), "--workers", "1", "--backend-store-uri",
               f"sqlite:///{tmp_path}/srv.db", *artifact_args]
    log = tmp_path / "server.log"
    with server(command, log, tmp_path, env) as proc:
        try:
            wait_for_http(f"{base}/health", 90, proc)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{log.read_text()[-3000:]}") from None
        yield base, proc


def _json(url: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="GET" if body is None else "POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_train_against_a_real_mlflow_server(tmp_path, monkeypatch):
    with mlflow_server(tmp_path, "--default-artifact-root", str(tmp_path / "srvart")) as (
            base, proc):
        # a server URI puts TensorBoard files under ./mlruns: keep them in tmp_path
        monkeypatch.chdir(tmp_path)
        data, out = tmp_path / "train.npz", tmp_path / "out"
        write_random_stub(data, n=10, big_n=16)
        assert train.cli_main(train_argv(data, out, base, epochs=1)) == 0
        run_id = run_id_of(out)

        name = urllib.parse.quote(EXPERIMENT)
        experiment = _json(f"{base}/api/2.0/mlflow/experiments/get-by-name?"
                           f"experiment_name={name}")["experiment"]
        found = _json(f"{base}/api/2.0/mlflow/runs/search",
                      {"experiment_ids": [experiment["experiment_id"]]})
        runs = found["runs"]
        assert [run["info"]["run_id"] for run in runs] == [run_id]
        run = runs[0]
        assert run["info"]["status"] == "FINISHED"
        params = {p["key"]: p["value"] for p in run["data"]["params"]}
        assert params["data.gridsize"] == "2"
        tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
        assert tags["run_kind"] == "train" and tags["tracking_uri"] == base
        metrics = {m["key"] for m in run["data"]["metrics"]}
        assert "patch/train/input_normalized/global_mean" in metrics
        # artifacts went to the server's artifact root
        listed = _json(f"{base}/api/2.0/mlflow/artifacts/list?run_id={run_id}&path=analysis")
        assert {f["path"] for f in listed["files"]} == {"analysis/torch_patch_stats.json",
                                                        "analysis/torch_patch_grid.png"}
    assert (tmp_path / "mlruns" / "tensorboard" / EXPERIMENT).is_dir()
    assert proc.poll() is not None  # the server is gone


def test_tensorboard_serves_the_patch_scalars(tracked_pair, tmp_path):
    from tests.tracking.conftest import client_for

    run = client_for(tracked_pair["uri"]).get_run(tracked_pair["train_run_id"])
    logdir = run.data.tags["tensorboard_logdir"]
    port = free_port()
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", logdir, "--host",
               "127.0.0.1", "--port", str(port), "--reload_interval", "1"]
    log = tmp_path / "tensorboard.log"
    with server(command, log, tmp_path) as proc:
        try:
            body = wait_for_http(f"http://127.0.0.1:{port}/data/plugin/scalars/tags", 60, proc,
                                 accept=lambda b: b"patch/train/" in b)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{log.read_text()[-3000:]}") from None
        tags = json.loads(body)
        all_tags = {tag for run_tags in tags.values() for tag in run_tags}
        assert "patch/train/input_normalized/global_mean" in all_tags
        assert "train_loss_epoch" in all_tags
    assert proc.poll() is not None
