"""Helpers for the tracking tests: argv builders, a free port, and one shared train +
inference pair tracked into a real sqlite store (made once per session; tests that add runs
to that store look runs up by id, never by counting)."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import write_random_stub

EXPERIMENT = "t"
TRAIN_MODULE = "ptycho_torch.train"


def sqlite_uri(folder: Path) -> str:
    return f"sqlite:///{Path(folder).resolve()}/mlruns/mlflow.db"


def train_argv(data: Path, out: Path, uri: str | None, *extra: str, epochs: int = 2) -> list[str]:
    argv = ["--train_data_file", str(data), "--output_dir", str(out), "--max_epochs",
            str(epochs), "--gridsize", "2", "--batch_size", "3", "--quiet", "--log-patch-stats",
            "--experiment-name", EXPERIMENT]
    if uri is not None:
        argv += ["--tracking-uri", uri]
    return argv + list(extra)


def inference_argv(model_dir: Path, data: Path, out: Path, uri: str, *extra: str) -> list[str]:
    return ["--model_path", str(model_dir), "--test_data", str(data), "--output_dir", str(out),
            "--quiet", "--log-patch-stats", "--tracking-uri", uri, "--experiment-name",
            EXPERIMENT, *extra]


def train_command(data: Path, out: Path, uri: str, *extra: str, epochs: int = 2) -> list[str]:
    """The train CLI as a real subprocess (python -m ptycho_torch.train ...)."""
    return [sys.executable, "-m", TRAIN_MODULE, *train_argv(data, out, uri, *extra,
                                                            epochs=epochs)]


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("MLFLOW_TRACKING_URI", None)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("OMP_NUM_THREADS", "1")  # 2 CPU cores shared by concurrent processes
    return env


def free_port() -> int:
    """A port nothing listens on right now (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_id_of(out: Path) -> str:
    """The MLflow run id a train output folder records in tracking.json."""
    return json.loads((Path(out) / "tracking.json").read_text())["run_id"]


def client_for(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def wait_for_http(url: str, timeout_s: float, proc=None, accept=lambda body: True) -> bytes:
    """GET url until it answers 200 with a body ``accept`` likes; fail on timeout or when
    ``proc`` (the server) exits first."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                body = response.read()
                if response.status == 200 and accept(body):
                    return body
                last = f"HTTP {response.status}: {body[:200]!r}"
        except OSError as exc:
            last = repr(exc)
        time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout_s} s (last: {last})")


@pytest.fixture(autouse=True)
def _no_ambient_tracking_uri(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(scope="session")
def tracked_pair(tmp_path_factory) -> dict:
    """One 2-epoch train run (10-position stub, N = 16, gridsize 2, batch 3) and one
    inference run with its model, both with patch stats, in a fresh sqlite store."""
    from ptycho_torch import inference, train

    root = tmp_path_factory.mktemp("tracked")
    data = root / "train.npz"
    write_random_stub(data, n=10, big_n=16)
    uri = sqlite_uri(root)
    out, inf = root / "out", root / "inf"
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        assert train.cli_main(train_argv(data, out, uri)) == 0
        assert inference.cli_main(inference_argv(out, data, inf, uri)) == 0
    client = client_for(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    inference_runs = client.search_runs([experiment.experiment_id],
                                        filter_string="tags.run_kind = 'inference'")
    assert len(inference_runs) == 1
    return {"root": root, "data": data, "uri": uri, "out": out, "inf": inf,
            "train_run_id": run_id_of(out), "inference_run_id": inference_runs[0].info.run_id,
            "experiment_id": experiment.experiment_id}
