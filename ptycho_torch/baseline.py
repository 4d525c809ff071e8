"""python -m ptycho_torch.baseline --hub DIR: the forward-parity baseline as one command.

Steps: simulate the scan (if its files are missing) -> train (10 epochs, 256 groups,
gridsize 2, batch 4, Poisson, deterministic, patch stats for 2 batches) -> inference on 128
groups of the test file with a debug dump and patch stats -> optional pytest selector ->
artifact inventory -> summary.md. One MLflow parent run holds the train and inference runs.
Each step's log is tee'd to DIR/cli/; a failing step stops the baseline with its name, its
log and a non-zero exit, keeping everything written before it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from ptycho_torch.cli.shared import UsageError, add_tracking_args, positive_int, resolve_device
from tracking.redaction import redact

logger = logging.getLogger("ptycho_torch.baseline")  # not "__main__" under python -m

PYTEST_SELECTOR = ("tests/torch/test_cli_train_torch.py::TestPatchStatsCLI::"
                   "test_patch_stats_dump")
KEY_STAGES = ("input_raw", "input_normalized", "object_amplitude", "predicted_amplitude")


class StepFailed(RuntimeError):
    def __init__(self, step: str, code: int, log: Path):
        super().__init__(f"step '{step}' failed (exit {code}); see {log}")
        self.step, self.code, self.log = step, code, log


def run_step(name: str, command: list[str], log_path: Path, env: dict[str, str],
             echo: bool) -> float:
    """Run a command, tee its output to log_path (and the console when echo); seconds."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    print(redact(f"[baseline] {name}: {shlex.join(command)}"), flush=True)
    started = time.perf_counter()
    with open(log_path, "wb") as log:
        log.write(redact(f"$ {shlex.join(command)}\n").encode())
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   env=env)
        assert process.stdout is not None
        while chunk := process.stdout.read1(4096):
            log.write(chunk)
            log.flush()
            if echo:
                sys.stdout.buffer.write(chunk)
                sys.stdout.buffer.flush()
        code = process.wait()
    seconds = time.perf_counter() - started
    print(f"[baseline] {name}: exit {code} after {seconds:.1f} s (log {log_path})", flush=True)
    if code != 0:
        raise StepFailed(name, code, log_path)
    return seconds


def _read_json(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def _stage_table(train_records: list[dict] | None, inference_records: list[dict] | None) -> str:
    """Markdown: key patch statistics of the first train and inference records."""
    firsts = {}
    for label, records in (("train", train_records), ("inference", inference_records)):
        chosen = [r for r in records or [] if r["stage_name"] == label]
        if chosen:
            firsts[label] = chosen[0]
    if not firsts:
        return "_no patch statistics recorded_\n"
    lines = ["| stage | statistic | " + " | ".join(firsts) + " |",
             "|---|---|" + "---|" * len(firsts)]
    for key in ("mean_input_scale", "physics_scale", "object_gain", "var_zero_mean"):
        cells = " | ".join(f"{r.get(key, float('nan')):.6g}" for r in firsts.values())
        lines.append(f"| (record) | {key} | {cells} |")
    for stage in KEY_STAGES:
        for stat in ("global_mean", "global_std", "var_zero_mean"):
            cells = " | ".join(f"{r['stages'][stage][stat]:.6g}" if stage in r["stages"]
                               else "-" for r in firsts.values())
            lines.append(f"| {stage} | {stat} | {cells} |")
    return "\n".join(lines) + "\n"


def write_summary(hub: Path, steps: list[dict], device: str, run_ids: dict[str, str | None],
                  status: str) -> Path:
    metrics = _read_json(hub / "inference" / "metrics.json") or {}
    train_records = _read_json(hub / "analysis" / "torch_patch_stats.json")
    inference_records = _read_json(hub / "analysis" / "forward_parity_debug" /
                                   "torch_patch_stats.json")
    lines = [f"# Forward-parity baseline: {status}", "",
             f"- hub: `{hub.resolve()}`", f"- device: {device}",
             f"- total wall time: {sum(s['seconds'] for s in steps):.1f} s", "",
             "## Steps", "", "| step | seconds | log | command |", "|---|---|---|---|"]
    for step in steps:
        lines.append(f"| {step['name']} | {step['seconds']:.1f} | `{step['log']}` | "
                     f"`{step['command']}` |")
    lines += ["", "## Reconstruction metrics (inference on the test file)", ""]
    if metrics:
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {key} | {value:.4f} |" for key, value in metrics.items()]
    else:
        lines.append("_no metrics (test file without objectGuess, or inference not run)_")
    lines += ["", "## Key patch statistics (first instrumented batch)", "",
              _stage_table(train_records, inference_records), "## MLflow runs", ""]
    lines += [f"- {name}: `{run_id}`" for name, run_id in run_ids.items()]
    path = hub / "summary.md"
    from tracking.files import atomic_write_text

    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ptycho_torch.baseline",
        description="Run the forward-parity baseline (simulate if needed, train, infer with "
                    "debug dump and patch stats, inventory, summary) into one hub folder.")
    parser.add_argument("--hub", default=None,
                        help="evidence folder (default: outputs/baseline-<date>-<time>)")
    parser.add_argument("--train-data", default="datasets/train.npz",
                        help="training scan; simulated when missing (default: %(default)s)")
    parser.add_argument("--test-data", default="datasets/test.npz",
                        help="test scan; simulated when missing (default: %(default)s)")
    parser.add_argument("--max-epochs", type=positive_int, default=10,
                        help="training epochs (default: %(default)s)")
    parser.add_argument("--n-images", type=positive_int, default=256,
                        help="training groups (default: %(default)s)")
    parser.add_argument("--inference-n-images", type=positive_int, default=128,
                        help="test groups reconstructed (default: %(default)s)")
    parser.add_argument("--gridsize", type=positive_int, default=2,
                        help="group side; C = gridsize^2 (default: %(default)s)")
    parser.add_argument("--batch-size", type=positive_int, default=4,
                        help="training batch size (default: %(default)s)")
    parser.add_argument("--inference-batch-size", type=positive_int, default=32,
                        help="test groups per forward pass: 128 groups make 4 batches, so "
                             "the patch-stats limit of 2 is reached (default: %(default)s)")
    parser.add_argument("--patch-stats-limit", type=positive_int, default=2,
                        help="instrumented batches per stage (default: %(default)s)")
    parser.add_argument("--accelerator", choices=["auto", "cpu", "gpu", "cuda"], default="auto",
                        help="device for train and inference (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed (default: %(default)s)")
    parser.add_argument("--with-pytest", action="store_true",
                        help=f"also run the patch-stats pytest selector ({PYTEST_SELECTOR}) "
                             "into <hub>/green/pytest_patch_stats.log")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bars or child output on the console (logs keep it)")
    add_tracking_args(parser)
    return parser


def cli_main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ptycho_torch.cli.shared import configure_logging

    configure_logging(args.quiet)
    hub = Path(args.hub or f"outputs/baseline-{time.strftime('%Y%m%d-%H%M%S')}")
    if hub.exists() and not hub.is_dir():
        print(f"python -m ptycho_torch.baseline: error: --hub {hub} is not a directory",
              file=sys.stderr)
        return 2
    from tracking.store import TrackingUnavailable

    try:
        return _run(args, hub)
    except StepFailed as exc:
        print(redact(f"python -m ptycho_torch.baseline: error: {exc}"), file=sys.stderr)
        return 1
    except (UsageError, TrackingUnavailable) as exc:
        print(redact(f"python -m ptycho_torch.baseline: error: {exc}"), file=sys.stderr)
        return 2


def _train_command(args: argparse.Namespace, hub: Path, train_data: Path,
                   tracking: list[str]) -> list[str]:
    return [sys.executable, "-m", "ptycho_torch.train", "--train_data_file", str(train_data),
            "--output_dir", str(hub / "train"), "--max_epochs", str(args.max_epochs),
            "--n_images", str(args.n_images), "--gridsize", str(args.gridsize),
            "--batch_size", str(args.batch_size), "--torch-loss-mode", "poisson",
            "--deterministic", "--seed", str(args.seed), "--accelerator", args.accelerator,
            "--log-patch-stats", "--patch-stats-limit", str(args.patch_stats_limit),
            "--patch-stats-dir", str(hub / "analysis"), "--run-name", f"{hub.name}-train",
            *tracking, *(["--quiet"] if args.quiet else [])]


def _inference_command(args: argparse.Namespace, hub: Path, test_data: Path,
                       tracking: list[str]) -> list[str]:
    return [sys.executable, "-m", "ptycho_torch.inference", "--model_path", str(hub / "train"),
            "--test_data", str(test_data), "--output_dir", str(hub / "inference"),
            "--n_images", str(args.inference_n_images),
            "--debug-dump", str(hub / "analysis" / "forward_parity_debug"),
            "--inference-batch-size", str(args.inference_batch_size),
            "--log-patch-stats", "--patch-stats-limit", str(args.patch_stats_limit),
            "--accelerator", args.accelerator, "--run-name", f"{hub.name}-inference",
            *tracking, *(["--quiet"] if args.quiet else [])]


def _publish(tracked, hub: Path, command: str, steps: list[dict], device,
             run_ids: dict[str, str | None], status: str) -> None:
    """Summary, inventory and provenance into the hub; step times and test metrics to the run."""
    from tracking.inventory import write_inventory
    from tracking.provenance import device_name, record_provenance

    summary = write_summary(hub, steps, device_name(device), run_ids, status)
    record_provenance(hub, command, [summary])
    inventory = write_inventory(hub)
    record_provenance(hub / "analysis", command, [inventory])
    tracked.log_artifact(summary)
    tracked.log_artifact(inventory, "analysis")
    tracked.log_metrics({f"baseline/{s['name']}_seconds": s["seconds"] for s in steps})
    metrics = _read_json(hub / "inference" / "metrics.json")
    if metrics:
        tracked.log_metrics({f"test/{k}": v for k, v in metrics.items()})
    print(f"[baseline] {status}: summary {summary}, inventory {inventory}", flush=True)


def _run(args: argparse.Namespace, hub: Path) -> int:
    from ptycho_torch.config import Accelerator
    from tracking.provenance import command_line
    from tracking.run import SIDECAR_FILE, TrackedRun
    from tracking.store import resolve_tracking_uri

    python = sys.executable
    uri = resolve_tracking_uri(args.tracking_uri)
    device = resolve_device(Accelerator(args.accelerator))
    echo = not args.quiet
    # the store reaches the steps by MLFLOW_TRACKING_URI (set below), not on their command
    # lines, where a credential in it would show in the process list, logs and the console
    tracking = ["--logger", ",".join(args.logger) or "none",
                "--experiment-name", args.experiment_name]
    steps: list[dict] = []
    run_ids: dict[str, str | None] = {}
    command = command_line("python -m ptycho_torch.baseline", None)

    def step(name: str, cmd: list[str], log: Path, env: dict[str, str]) -> None:
        seconds = run_step(name, cmd, log, env, echo)
        steps.append({"name": name, "seconds": seconds, "log": str(log.relative_to(hub)),
                      "command": shlex.join(cmd)})

    hub.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    with TrackedRun(kind="baseline", output_dir=hub, command=command,
                    loggers=args.logger if "mlflow" in args.logger else (), tracking_uri=uri,
                    experiment_name=args.experiment_name, run_name=f"baseline-{hub.name}",
                    device=device, seed=args.seed) as tracked:
        status = "FAILED"
        try:
            if tracked.run_id:
                tracking += ["--parent-run-id", tracked.run_id]
                run_ids["baseline (parent)"] = tracked.run_id
            train_data, test_data = Path(args.train_data), Path(args.test_data)
            if not (train_data.is_file() and test_data.is_file()):
                if train_data.parent != test_data.parent:
                    raise StepFailed("simulate", 2, hub / "cli" / "simulate.log")
                step("simulate", [python, "-m", "ptycho_torch.simulate", "--output-dir",
                                  str(train_data.parent), "--seed", str(args.seed)],
                     hub / "cli" / "simulate.log", env)
            step("train", _train_command(args, hub, train_data, tracking),
                 hub / "cli" / "train_patch_stats.log", env)
            run_ids["train"] = (_read_json(hub / "train" / SIDECAR_FILE) or {}).get("run_id")
            step("inference", _inference_command(args, hub, test_data, tracking),
                 hub / "cli" / "inference_patch_stats.log", env)
            run_ids["inference"] = (_read_json(hub / "inference" / SIDECAR_FILE) or {}).get(
                "run_id")
            if args.with_pytest:
                step("pytest", [python, "-m", "pytest", PYTEST_SELECTOR, "-vv"],
                     hub / "green" / "pytest_patch_stats.log", env)
            status = "PASSED"
        finally:
            _publish(tracked, hub, command, steps, device, run_ids, status)
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())
