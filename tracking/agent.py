"""The tracking agent: a second process that does a CLI run's MLflow work.

MLflow's own start-up (``import mlflow``, opening the sqlite store) takes over a second on a
small CPU. A CLI calls :func:`prestart` first thing, before its heavy imports (torch,
Lightning): the agent starts on another core, imports MLflow and opens the store while the
CLI is still importing, then runs the :class:`tracking.store_client.LocalStore` calls the
run sends it. Writes (metrics, params, tags, artifacts) are queued and never wait; calls
with an answer (create, continue, register) wait for it. When the CLI closes the run, it
waits for the queue to drain, so a FINISHED run has all its files.

The store's URI reaches the agent in its environment (``PTYCHO_TRACKING_AGENT_URI``), never
on its command line, where any user of the machine could read a credential in it.

Protocol: JSON lines ``{"id", "op", "kwargs", "reply"}`` on the agent's stdin; answers
``{"id", "result"}`` or ``{"id", "error": [type, message]}`` on a pipe of their own (stdout
stays free for MLflow's own prints). The agent ignores SIGINT and SIGTERM (the CLI decides
how its run ends) and exits at the end of its input: a CLI killed outright leaves its run
RUNNING, as an in-process run would.

    PTYCHO_TRACKING_AGENT_URI=URI python -m tracking.agent REPLY_FD   # by prestart()
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading

from tracking.redaction import RedactingFormatter, install_log_record_redaction
from tracking.store import resolve_tracking_uri, store_lock
from tracking.store_client import RunNotFound

logger = logging.getLogger("tracking.run")

_AGENT: AgentStore | None = None
URI_VARIABLE = "PTYCHO_TRACKING_AGENT_URI"


class AgentStore:
    """The :class:`~tracking.store_client.LocalStore` interface, served by the agent."""

    def __init__(self, uri: str, process: subprocess.Popen, replies):
        self.uri = uri
        self._process = process
        self._replies = replies
        self._next_id = 0
        self._lock = threading.Lock()

    def _send(self, op: str, reply: bool, **kwargs):
        with self._lock:
            self._next_id += 1
            message = {"id": self._next_id, "op": op, "kwargs": kwargs, "reply": reply}
            try:
                self._process.stdin.write(json.dumps(message) + "\n")
                self._process.stdin.flush()
            except (BrokenPipeError, ValueError) as exc:
                raise RuntimeError(f"the tracking agent has stopped ({exc})") from exc
            if not reply:
                return None
            line = self._replies.readline()
            if not line:
                raise RuntimeError("the tracking agent has stopped")
            answer = json.loads(line)
        if "error" in answer:
            kind, text = answer["error"]
            if kind == "RunNotFound":
                raise RunNotFound(text)
            raise RuntimeError(text)
        return answer["result"]

    def create_run(self, experiment_name, run_name, tags, artifact_location) -> dict:
        return self._send("create_run", True, experiment_name=experiment_name,
                          run_name=run_name, tags=tags, artifact_location=artifact_location)

    def continue_run(self, run_id: str) -> dict:
        return self._send("continue_run", True, run_id=run_id)

    def register_model(self, run_id: str, name: str) -> str:
        return self._send("register_model", True, run_id=run_id, name=name)

    def set_terminated(self, run_id: str, status: str) -> None:
        self._send("set_terminated", False, run_id=run_id, status=status)

    def log(self, run_id, metrics=None, step=None, params=None, tags=None) -> None:
        self._send("log", False, run_id=run_id, metrics=metrics, step=step, params=params,
                   tags=tags)

    def log_artifact(self, run_id: str, path: str, artifact_path: str | None) -> None:
        self._send("log_artifact", False, run_id=run_id, path=path,
                   artifact_path=artifact_path)

    def log_dataset(self, run_id: str, path: str, context: str, digest: str) -> None:
        self._send("log_dataset", False, run_id=run_id, path=path, context=context,
                   digest=digest)

    def start_system_metrics(self, run_id: str, interval_s: float, resume: bool) -> None:
        self._send("start_system_metrics", False, run_id=run_id, interval_s=interval_s,
                   resume=resume)

    def stop_system_metrics(self) -> None:
        self._send("stop_system_metrics", False)

    def close(self) -> None:
        """End the input and wait until every queued write is done."""
        try:
            self._process.stdin.close()
        except (BrokenPipeError, ValueError):
            pass
        self._process.wait()
        self._replies.close()


def _peek(argv: list[str], flag: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def prestart(argv: list[str]) -> None:
    """Start the agent for the MLflow store this command line will use (nothing when it
    asks for help, turns MLflow off, or is a DDP worker: rank 0 alone tracks)."""
    global _AGENT
    if _AGENT is not None or {"-h", "--help"} & set(argv):
        return
    if any(os.environ.get(name, "0") not in ("", "0")
           for name in ("RANK", "LOCAL_RANK", "SLURM_PROCID")):
        return
    loggers = _peek(argv, "--logger")
    if loggers is not None and "mlflow" not in loggers.split(","):
        return
    uri = resolve_tracking_uri(_peek(argv, "--tracking-uri"))
    read_fd, write_fd = os.pipe()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "tracking.agent", str(write_fd)],
            stdin=subprocess.PIPE, text=True, pass_fds=(write_fd,),
            env={**os.environ, URI_VARIABLE: uri})
    except OSError:
        os.close(read_fd)
        return
    finally:
        os.close(write_fd)
    _AGENT = AgentStore(uri, process, os.fdopen(read_fd, "r"))


def open_store(uri: str):
    """The store for a run on ``uri``: the prestarted agent when there is one for it (used
    once), else a :class:`~tracking.store_client.LocalStore` in this process."""
    global _AGENT
    if _AGENT is not None and _AGENT.uri == uri:
        agent, _AGENT = _AGENT, None
        return agent
    from tracking.store_client import LocalStore

    return LocalStore(uri)


def serve(uri: str, reply_fd: int) -> int:
    """The agent's loop: run each call on a LocalStore, answer those that want it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    install_log_record_redaction()  # MLflow's own handler prints too
    for name in ("mlflow", "mlflow.system_metrics", "mlflow.store", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)  # the CLI's log, not MLflow's
    replies = os.fdopen(reply_fd, "w")
    store, failure = None, None
    try:
        from tracking.store_client import LocalStore

        with store_lock(uri):  # two new runs on a new database: one creates its tables
            store = LocalStore(uri)
            if uri.startswith("sqlite:"):  # open it now; a server is asked only when used
                store.client.search_experiments(max_results=1)
    except Exception as exc:  # noqa: BLE001 - every call answers with it
        failure = exc
    for line in sys.stdin:
        message = json.loads(line)
        try:
            if failure is not None:
                raise failure
            result = getattr(store, message["op"])(**message["kwargs"])
            answer = {"id": message["id"], "result": result}
        except Exception as exc:  # noqa: BLE001 - answered, or reported once per kind
            text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            answer = {"id": message["id"], "error": [type(exc).__name__, text]}
            if not message["reply"]:
                logger.warning("tracking write failed (%s): %s; training goes on and local "
                               "files are kept", message["op"], text)
        if message["reply"]:
            replies.write(json.dumps(answer) + "\n")
            replies.flush()
    if store is not None:
        try:
            store.stop_system_metrics()  # the CLI ended without closing its run
        except Exception:  # noqa: BLE001
            pass
    return 0


if __name__ == "__main__":
    sys.exit(serve(os.environ[URI_VARIABLE], int(sys.argv[1])))
