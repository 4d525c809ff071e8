"""Credentials never recorded: the redaction itself, and a real training, resume and
inference against a real `mlflow server` behind MLflow's basic-auth app, with the password
in the URI (train, inference) or in the environment (resume) and a token in the
environment, after which every byte written (output folders, the server's store, auth
database and artifact root, TensorBoard files, captured stdout/stderr) is searched for
them."""

from __future__ import annotations

import base64
import logging
import os
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest

from tests.conftest import write_random_stub
from tests.tracking.conftest import EXPERIMENT, client_for, run_id_of, subprocess_env
from tracking.redaction import MASK, RedactingFormatter, redact

PASSWORD = "s3cr3t-Pw9-long-enough"
TOKEN = "tok-Zq81xLm0"


@pytest.mark.parametrize("text, expected", [
    ("http://alice:s3cret@127.0.0.1:5000/x", "http://***@127.0.0.1:5000/x"),
    ("https://token@example.org", "https://***@example.org"),
    ("postgresql://user:p%40ss@db:5432/mlflow", "postgresql://***@db:5432/mlflow"),
    ("--tracking-uri=http://a:b@h:1 --other x", "--tracking-uri=http://***@h:1 --other x"),
    ("'http://a:b@h' and \"https://c:d@k/p\"", "'http://***@h' and \"https://***@k/p\""),
    ("https://store.example/blob?sig=abc123&x=1", "https://store.example/blob?sig=***&x=1"),
    ("http://127.0.0.1:5000/#/experiments/1", "http://127.0.0.1:5000/#/experiments/1"),
    ("sqlite:///mlruns/mlflow.db", "sqlite:///mlruns/mlflow.db"),
    ("user@example.org wrote this", "user@example.org wrote this"),
])
def test_redact_masks_uri_credentials_and_secret_query_values(text, expected, monkeypatch):
    for name in list(os.environ):
        if "TOKEN" in name or "PASSWORD" in name or "SECRET" in name:
            monkeypatch.delenv(name)
    assert redact(text) == expected


def test_redact_masks_environment_secrets_in_nested_values(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", TOKEN)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-" + PASSWORD)
    monkeypatch.setenv("SOME_KEY", "1")  # too short to be taken for a secret
    value = {"cmd": ["train", f"--token {TOKEN}"], ("k", 1): (f"x{PASSWORD}y", 3.5),
             f"key {TOKEN}": None, "n": 1, "aws": f"aws-{PASSWORD}"}
    out = redact(value)
    text = repr(out)
    assert TOKEN not in text and PASSWORD not in text
    assert out["cmd"] == ["train", f"--token {MASK}"]
    assert out[("k", 1)] == (f"x{MASK}y", 3.5) and out["n"] == 1
    assert out["aws"] == MASK  # the longer secret masked whole, not around the shorter one
    assert redact("version 1.10") == "version 1.10"


def test_redacting_formatter_masks_messages_arguments_and_tracebacks(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", TOKEN)
    formatter = RedactingFormatter("%(message)s")
    try:
        raise RuntimeError(f"failed at http://bob:{PASSWORD}@host:1 with {TOKEN}")
    except RuntimeError:
        record = logging.LogRecord("mlflow", logging.WARNING, __file__, 1,
                                   "store %s said %s", ("http://bob:pw1@h", TOKEN),
                                   sys.exc_info())
    line = formatter.format(record)
    assert "store http://***@h said ***" in line and "Traceback" in line
    assert PASSWORD not in line and TOKEN not in line and "pw1" not in line


def test_written_files_are_redacted(tmp_path, monkeypatch):
    from tracking.files import atomic_write_json, atomic_write_text

    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    atomic_write_json(tmp_path / "a.json", {"execution": {
        "tracking_uri": f"http://alice:{PASSWORD}@h:5000"}, "n": [1, 2]})
    atomic_write_text(tmp_path / "b.md", f"password is {PASSWORD}\n")
    assert PASSWORD not in (tmp_path / "a.json").read_text()
    assert '"tracking_uri": "http://***@h:5000"' in (tmp_path / "a.json").read_text()
    assert (tmp_path / "b.md").read_text() == "password is ***\n"


def test_the_tracking_agent_gets_its_uri_off_the_command_line(tmp_path):
    from tracking import agent

    uri = f"sqlite:///{tmp_path}/u{PASSWORD}/mlflow.db"  # a secret-bearing URI stand-in
    agent._AGENT = None
    agent.prestart(["--tracking-uri", uri])
    store = agent._AGENT
    assert store is not None
    try:
        cmdline = Path(f"/proc/{store._process.pid}/cmdline").read_bytes()
        assert PASSWORD.encode() not in cmdline
        assert b"tracking.agent" in cmdline
    finally:
        agent._AGENT = None
        store.close()
    assert store._process.returncode == 0


# ------------------------------------------------------------------- the real thing

def _run(command: list[str], env: dict, cwd: Path, name: str, logs: Path) -> None:
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, timeout=600)
    (logs / f"{name}.stdout").write_bytes(done.stdout)
    (logs / f"{name}.stderr").write_bytes(done.stderr)
    assert done.returncode == 0, done.stderr.decode()[-3000:]


def _search(roots: dict[str, Path], needles: list[bytes]) -> list[tuple[str, int, int]]:
    """For each place: (label, files searched, hits)."""
    table = []
    for label, root in roots.items():
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        hits = [(p, n) for p in files for n in needles if n in p.read_bytes()]
        assert not hits, f"secret found in {label}: {[(str(p), n) for p, n in hits]}"
        table.append((label, len(files), len(hits)))
    return table


@pytest.mark.slow
def test_no_secret_reaches_any_byte_written(tmp_path):
    from tests.tracking.test_servers import mlflow_server

    work = tmp_path / "work"
    logs = tmp_path / "console"
    work.mkdir()
    logs.mkdir()
    data = work / "train.npz"
    write_random_stub(data, n=10, big_n=16)
    auth_ini = tmp_path / "auth.ini"
    auth_ini.write_text(f"[mlflow]\ndefault_permission = READ\n"
                        f"database_uri = sqlite:///{tmp_path}/auth.db\nadmin_username = alice\n"
                        "authorization_function = "
                        "mlflow.server.auth:authenticate_request_basic_auth\n")
    server_env = {"MLFLOW_AUTH_CONFIG_PATH": str(auth_ini),
                  "MLFLOW_AUTH_ADMIN_PASSWORD": PASSWORD,
                  "MLFLOW_FLASK_SERVER_SECRET_KEY": "csrf-key-of-this-test"}
    with mlflow_server(tmp_path, "--default-artifact-root", str(tmp_path / "srvart"),
                       "--app-name", "basic-auth", env=server_env) as (base, _proc):
        host = base.split("://", 1)[1]
        uri = f"http://alice:{PASSWORD}@{host}"
        env = {**subprocess_env(), "MLFLOW_TRACKING_TOKEN": TOKEN}
        common = ["--quiet", "--log-patch-stats", "--experiment-name", EXPERIMENT]
        train = [sys.executable, "-m", "ptycho_torch.train", "--train_data_file", str(data),
                 "--output_dir", "out", "--gridsize", "2", "--batch_size", "3", *common]
        # without a credential the server refuses: one line, exit 2, nothing tracked
        refused = subprocess.run([*train, "--tracking-uri", base, "--max_epochs", "1"],
                                 env=env, cwd=work, capture_output=True, timeout=600)
        (logs / "refused.stderr").write_bytes(refused.stderr)
        assert refused.returncode == 2, refused.stderr.decode()[-2000:]
        lines = refused.stderr.decode().strip().splitlines()
        print("\nwithout a credential:", lines[-1])
        assert len(lines) == 1 and "error:" in lines[0], lines
        assert not (work / "out").exists()
        _run([*train, "--tracking-uri", uri, "--max_epochs", "1"], env, work, "train", logs)
        run_id = run_id_of(work / "out")
        # the credential given again, this time as MLflow reads it from the environment
        _run([*train, "--tracking-uri", base, "--max_epochs", "2", "--resume"],
             {**env, "MLFLOW_TRACKING_USERNAME": "alice", "MLFLOW_TRACKING_PASSWORD": PASSWORD},
             work, "resume", logs)
        _run([sys.executable, "-m", "ptycho_torch.inference", "--model_path",
              f"runs:/{run_id}", "--test_data", str(data), "--output_dir", "inf",
              "--debug-dump", "inf/dump", "--tracking-uri", uri, *common], env, work,
             "inference", logs)
        # the runs worked with the credential given again: resumed in place, model fetched
        client = client_for(uri)
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        assert run.data.tags["resume_count"] == "1"
        assert run.data.tags["tracking_uri"] == f"http://***@{host}"
        assert run.data.params["execution.tracking_uri"] == f"http://***@{host}"
        inference_runs = client.search_runs(
            [run.info.experiment_id], filter_string="tags.run_kind = 'inference'")
        assert [r.data.tags["train_run_id"] for r in inference_runs] == [run_id]
    basic = base64.b64encode(f"alice:{PASSWORD}".encode())
    needles = [PASSWORD.encode(), TOKEN.encode(), urllib.parse.quote(PASSWORD).encode(), basic]
    places = {"train/resume output folder": work / "out",
              "inference output folder (with debug dump)": work / "inf",
              "TensorBoard event files and hparams.yaml": work / "mlruns",
              "server store (sqlite)": tmp_path / "srv.db",
              "server auth database (sqlite)": tmp_path / "auth.db",
              "server artifact root": tmp_path / "srvart",
              "server log": tmp_path / "server.log",
              "captured stdout/stderr": logs}
    table = _search(places, needles)
    assert all(n > 0 for _, n, _ in table), table  # every place held files to search
    print("\nplace | files searched | hits")
    for label, n_files, n_hits in table:
        print(f"{label} | {n_files} | {n_hits}")


def test_cli_log_handler_redacts_log_lines_and_python_warnings(capsys):
    import warnings

    from ptycho_torch.cli.shared import configure_logging

    root = logging.getLogger()
    # an earlier test's CLI handler is bound to the sys.stderr of its time: set it aside
    earlier = [h for h in root.handlers if getattr(h, "is_ptycho_handler", False)]
    for handler in earlier:
        root.removeHandler(handler)
    before = list(root.handlers)
    logging.captureWarnings(False)  # an earlier CLI test left it on, under pytest's recorder
    configure_logging(quiet=False)
    try:
        logging.getLogger("somelib.client").warning("retrying http://bob:%s@h:1/api", PASSWORD)
        # a handler of another library's own (MLflow installs one) gets redacted records too
        seen: list[logging.LogRecord] = []
        own = logging.getLogger("otherlib")
        own.propagate = False
        handler = logging.Handler()
        handler.emit = seen.append
        own.addHandler(handler)
        own.warning("at http://bob:%s@h", PASSWORD)
        own.removeHandler(handler)
        assert seen and PASSWORD not in seen[0].getMessage()
        warnings.warn(f"insecure request to https://bob:{PASSWORD}@h:1", UserWarning,
                      stacklevel=1)
    finally:
        logging.captureWarnings(False)
        for handler in [h for h in root.handlers if h not in before]:
            root.removeHandler(handler)
        for handler in earlier:
            root.addHandler(handler)
    err = capsys.readouterr().err
    assert PASSWORD not in err
    assert "retrying http://***@h:1/api" in err and "insecure request to https://***@h:1" in err
