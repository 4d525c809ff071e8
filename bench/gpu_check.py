"""python -m bench.gpu_check --out DIR: the GPU acceptance in one command.

On one CUDA device, in one run (planned: 4 to 5 minutes on an H200), with every MLflow run in a
fresh sqlite store:

- baseline: the forward-parity baseline as the project runs it (``python -m
  ptycho_torch.baseline``: train 10 epochs x 256 groups, gridsize 2, batch 4, Poisson,
  deterministic, patch stats for 2 batches; inference with a debug dump), its wall times, the
  train run's GPU system metrics and numerics tags, and what tracking costs that training
  (the same command with ``--logger none``, before and after it);
- determinism: the same training twice (library ``fit``) gives bit-identical per-step losses
  and weights, and two reconstructions (stitching included) are bit-identical;
- no cost when off: a training step and an inference batch with patch statistics off, or on
  past their limit, allocate on the GPU exactly what the uninstrumented forward allocates
  (``torch.cuda.memory_stats``), and what the K instrumented batches cost (bench/no_cost.py);
- throughput against the targets: training step at the baseline's batch 4 (<= 3 ms),
  groups/s at batch 256 in fp32 and bf16 autocast (>= 10,000), inference patterns/s
  including stitching at 16,384 patterns (>= 100,000), peak memory of each;
- DDP: the train CLI under ``--strategy ddp`` (NCCL on the one GPU) finishes and tracks one
  run;
- ``pytest -m gpu``: the GPU tests, with their counts;
- compile: the batch-4 training step with ``torch.compile``, default and reduce-overhead
  (CUDA graphs), last because compiling takes the longest.

Prints one table (check, measured, target, verdict) and writes it as
``DIR/<date>-<device>-gpu-check[-smoke].md`` and ``.json``, rewritten after every part so
that a run stopped by a time limit keeps what it finished. ``--smoke`` runs the same code
on the CPU at tiny sizes in a few minutes at most (tests/bench/test_gpu_check.py runs it in CI); a
row whose target or measurement needs a GPU then says "n/a on CPU" beside what it measured.
Exit 0 when no row FAILs or ERRORs (a throughput short of its target is MISS, not a failure),
1 otherwise, 2 on bad usage or a missing package (named, before anything runs).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.common import device_name, today, write_results

ROOT = Path(__file__).resolve().parent.parent
PASS, FAIL, MISS, ERROR = "PASS", "FAIL", "MISS", "ERROR"
NA_CPU = "n/a on CPU"
NA_OPTIONAL = "n/a (did not run here)"
FIGURE = "measured (no target)"
SECTIONS = ("baseline", "determinism", "no_cost", "throughput", "ddp", "pytest", "compile")
# what a tracked run and the pytest row import beyond the GPU machine's own packages
# (tools/gpu_wheels.sh carries them)
CARRIED = ("mlflow-skinny", "sqlalchemy", "alembic", "pytest", "hypothesis")


@dataclass(frozen=True)
class Sizes:
    simulate: tuple[str, ...]
    """Extra flags of ``python -m ptycho_torch.simulate`` (the baseline uses its defaults)."""
    epochs: int
    groups: int
    inference_groups: int
    inference_batch: int
    train_rows: tuple[tuple[int, tuple[str, ...]], ...]
    """(batch, variants) of the training-step rows (bench/train_steps.py variants)."""
    compile_rows: tuple[tuple[int, tuple[str, ...]], ...]
    """The same with torch.compile: last, as compiling takes the longest."""
    n_steps: int
    inference_patterns: int
    inference_repeats: int
    no_cost_patch: int
    no_cost_steps: int
    """Training steps measured after the limit."""
    no_cost_inference_batch: int
    ddp_devices: int
    ddp_groups: int


FULL = Sizes(simulate=(), epochs=10, groups=256, inference_groups=128, inference_batch=32,
             train_rows=((4, ("fp32", "bf16")), (256, ("fp32", "bf16"))),
             compile_rows=((4, ("fp32+compile", "fp32+graphs")),),
             n_steps=30, inference_patterns=16384, inference_repeats=3, no_cost_patch=64,
             no_cost_steps=3, no_cost_inference_batch=32, ddp_devices=1, ddp_groups=64)
SMOKE = Sizes(simulate=("--n-images", "96", "--patch-size", "32"), epochs=1, groups=16,
              inference_groups=8, inference_batch=4, train_rows=((4, ("fp32",)),),
              compile_rows=(),  # compiling for the CPU takes minutes
              n_steps=2, inference_patterns=64, inference_repeats=1, no_cost_patch=32,
              no_cost_steps=1, no_cost_inference_batch=4, ddp_devices=1, ddp_groups=8)
STEP_TARGET_MS = 3.0
GROUPS_TARGET = 10_000
PATTERNS_TARGET = 100_000
TRACKING_TARGET = 0.05


class Check:
    """One gpu_check run: its device, sizes, work folder, store, and the rows so far."""

    def __init__(self, device: str, sizes: Sizes, work: Path):
        self.device, self.sizes, self.work = device, sizes, work
        self.uri = f"sqlite:///{work / 'mlruns' / 'mlflow.db'}"
        self.rows: list[dict] = []
        self.details: dict = {}
        self._data: tuple[Path, Path] | None = None

    @property
    def gpu(self) -> bool:
        return self.device == "cuda"

    @property
    def accelerator(self) -> str:
        return "gpu" if self.gpu else "cpu"

    def row(self, check: str, measured: str, target: str, verdict: str) -> None:
        self.rows.append({"check": check, "measured": measured, "target": target,
                          "verdict": verdict})

    def target_row(self, check: str, measured: str, target: str, met: bool) -> None:
        """A row against a GPU target: PASS or MISS on a GPU, n/a on the CPU."""
        self.row(check, measured, target, (PASS if met else MISS) if self.gpu else NA_CPU)

    def data(self) -> tuple[Path, Path]:
        """train.npz and test.npz, simulated once (the baseline's own defaults in full)."""
        if self._data is None:
            folder = self.work / "data"
            seconds = run_module("ptycho_torch.simulate",
                                 ["--output-dir", str(folder), "--seed", "0",
                                  *self.sizes.simulate], self.work / "logs" / "simulate.log")
            self.details["simulate_seconds"] = seconds
            self._data = (folder / "train.npz", folder / "test.npz")
        return self._data


def run_module(module: str, args: list[str], log: Path) -> float:
    """Wall seconds of ``python -m module args`` (output into ``log``); RuntimeError with
    the last lines of the log when it fails."""
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", module, *args]
    started = time.perf_counter()
    with open(log, "w") as handle:
        code = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT).returncode
    seconds = time.perf_counter() - started
    if code != 0:
        tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])
        raise RuntimeError(f"python -m {module} exit {code} ({log}): {tail}")
    return seconds


def train_flags(check: Check, train: Path, out: Path) -> list[str]:
    """The baseline's training flags (ptycho_torch/baseline.py), for runs beside it."""
    s = check.sizes
    return ["--train_data_file", str(train), "--output_dir", str(out),
            "--max_epochs", str(s.epochs), "--n_images", str(s.groups), "--gridsize", "2",
            "--batch_size", "4", "--torch-loss-mode", "poisson", "--deterministic",
            "--seed", "0", "--accelerator", check.accelerator, "--log-patch-stats",
            "--patch-stats-limit", "2", "--quiet"]


def _client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(uri)


# -- sections ---------------------------------------------------------------------------
def check_baseline(check: Check) -> None:
    """The baseline CLI tracked into the sqlite store; its runs' metrics and tags; and the
    same training untracked, before and after it, for tracking's cost."""
    from tracking.run import read_sidecar

    s = check.sizes
    train, test = check.data()
    hub = check.work / "baseline"

    def untracked(label: str) -> float:
        return run_module("ptycho_torch.train",
                          [*train_flags(check, train, check.work / f"untracked-{label}"),
                           "--logger", "none"], check.work / "logs" / f"untracked-{label}.log")

    # the first process to start CUDA (and read its libraries from disk) pays for it: an
    # untracked run first, so the tracked one is not the cold one, and another after it
    untracked_before = untracked("before")
    seconds = run_module("ptycho_torch.baseline", [
        "--hub", str(hub), "--train-data", str(train), "--test-data", str(test),
        "--max-epochs", str(s.epochs), "--n-images", str(s.groups),
        "--inference-n-images", str(s.inference_groups),
        "--inference-batch-size", str(s.inference_batch), "--accelerator", check.accelerator,
        "--tracking-uri", check.uri, "--experiment-name", "gpu_check", "--quiet"],
        check.work / "logs" / "baseline.log")
    client = _client(check.uri)
    train_run = client.get_run(read_sidecar(hub / "train")["run_id"])
    inference_run = client.get_run(read_sidecar(hub / "inference")["run_id"])
    parent = client.get_run(train_run.data.tags["mlflow.parentRunId"])
    step_seconds = {name: parent.data.metrics.get(f"baseline/{name}_seconds")
                    for name in ("train", "inference")}
    check.details["baseline"] = {"seconds": seconds, "steps": step_seconds,
                                 "train_run": train_run.info.run_id,
                                 "inference_run": inference_run.info.run_id}
    statuses = {run.info.run_name: run.info.status for run in (parent, train_run,
                                                               inference_run)}
    finished = all(status == "FINISHED" for status in statuses.values())
    check.row(f"baseline: train {s.epochs} ep x {s.groups} groups, gridsize 2, batch 4, "
              "Poisson, deterministic, patch stats 2 (tracked, sqlite)",
              f"{step_seconds['train']:.1f} s; run {train_run.info.status}",
              "finishes, tracked", PASS if finished else FAIL)
    check.row(f"baseline: inference {s.inference_groups} groups, --debug-dump, patch stats "
              "(tracked)",
              f"{step_seconds['inference']:.1f} s; run {inference_run.info.status}; "
              f"whole baseline {seconds:.1f} s", "finishes, tracked",
              PASS if finished else FAIL)

    metrics = train_run.data.metrics
    gpu_keys = sorted(k for k in metrics if re.fullmatch(
        r"system/gpu_\d+_(utilization_percentage|memory_usage_megabytes)", k))
    has_gpu = (any(k.endswith("utilization_percentage") for k in gpu_keys)
               and any(k.endswith("memory_usage_megabytes") for k in gpu_keys))
    if check.gpu:
        shown = ", ".join(f"{k.removeprefix('system/')} {metrics[k]:.0f}" for k in gpu_keys)
        check.row("baseline train run: GPU system metrics (utilization, memory)",
                  shown or "none logged", "present", PASS if has_gpu else FAIL)
    else:
        n_system = sum(k.startswith("system/") for k in metrics)
        check.row("baseline train run: GPU system metrics (utilization, memory)",
                  f"no GPU; {n_system} CPU/memory/disk system metrics logged",
                  "present", NA_CPU if n_system else FAIL)
    tags = train_run.data.tags
    numerics = {k: v for k, v in tags.items() if k.startswith("numerics.")}
    deterministic = numerics.get("numerics.deterministic_algorithms") == "true"
    check.row("baseline train run: numerics tags",
              f"{len(numerics)} numerics.* tags; deterministic_algorithms "
              f"{numerics.get('numerics.deterministic_algorithms')}, gpu.names "
              f"{tags.get('gpu.names')!r}", "present, deterministic true",
              PASS if numerics and deterministic else FAIL)

    # tracking's cost: the same training with --logger none, before and after the tracked one
    untracked_after = untracked("after")
    tracked = step_seconds["train"]
    plain = min(untracked_before, untracked_after)
    share = (tracked - plain) / tracked
    check.details["tracking_cost"] = {"tracked_s": tracked,
                                      "untracked_s": [untracked_before, untracked_after]}
    check.target_row("tracking's cost on the baseline training (whole processes: tracked vs "
                     "the faster of --logger none before and after it)",
                     f"{tracked - plain:+.2f} s of {tracked:.1f} s = {100 * share:+.1f} % "
                     f"(untracked {untracked_before:.1f} s, {untracked_after:.1f} s)",
                     f"<= {100 * TRACKING_TARGET:.0f} %", share <= TRACKING_TARGET)


def check_determinism(check: Check) -> None:
    """The baseline's training twice through the library, then two reconstructions."""
    import lightning as L
    import numpy as np
    import torch

    from ptycho_torch import (
        ExecutionConfig,
        InferenceConfig,
        TrainingConfig,
        build_run_config,
        fit,
        load_scan,
        reconstruct,
    )

    class StepLosses(L.Callback):
        def __init__(self):
            self.losses = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            self.losses.append(loss.detach().clone())

    s = check.sizes
    train_path, test_path = check.data()
    scan, test = load_scan(train_path), load_scan(test_path)
    config = build_run_config(scan, gridsize=2, n_groups=s.groups,
                              training=TrainingConfig(max_epochs=s.epochs, batch_size=4),
                              execution=ExecutionConfig(deterministic=True, quiet=True, seed=0,
                                                        loggers=()))
    flags = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
             torch.backends.cudnn.benchmark)
    results = []
    try:
        for index in range(2):
            losses = StepLosses()
            result = fit(config, scan, check.work / f"determinism-{index}", device=check.device,
                         callbacks=[losses])
            results.append((torch.stack(losses.losses).cpu(), result.model.state_dict()))
    finally:  # the inference CLI does not ask for deterministic algorithms
        torch.use_deterministic_algorithms(flags[0])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = flags[1:]
    (losses_a, weights_a), (losses_b, weights_b) = results
    same_losses = losses_a.shape == losses_b.shape and torch.equal(losses_a, losses_b)
    differing = [k for k in weights_a if not torch.equal(weights_a[k].cpu(), weights_b[k].cpu())]
    check.row(f"determinism: training twice ({s.epochs} ep x {s.groups} groups, "
              "deterministic)",
              f"{len(losses_a)} step losses {'identical' if same_losses else 'DIFFER'}; "
              f"{len(weights_a) - len(differing)}/{len(weights_a)} weight tensors identical",
              "bit-identical", PASS if same_losses and not differing else FAIL)

    inference = InferenceConfig(n_groups=s.inference_groups,
                                inference_batch_size=s.inference_batch)
    model = result.model
    first, second = (reconstruct(model, test, config, inference, device=check.device,
                                 progress=False) for _ in range(2))
    same_object = np.array_equal(first.object, second.object)
    same_weight = np.array_equal(first.weight, second.weight)
    check.row(f"determinism: inference twice ({first.n_patterns} patterns, stitched)",
              f"object {'identical' if same_object else 'DIFFERS'}, coverage "
              f"{'identical' if same_weight else 'DIFFERS'}", "bit-identical",
              PASS if same_object and same_weight else FAIL)


def check_no_cost(check: Check) -> None:
    from bench import no_cost

    s = check.sizes
    result = no_cost.measure(check.device, check.work / "no_cost", patch=s.no_cost_patch,
                             inference_batch=s.no_cost_inference_batch,
                             measured_steps=s.no_cost_steps)
    check.details["no_cost"] = result
    no_cost_rows(check, result)


def no_cost_rows(check: Check, result: dict) -> None:
    """The rows of :func:`bench.no_cost.measure`'s result: equal or not, and the K-batch
    cost."""
    from bench import no_cost

    limit = result["limit"]
    for part, what in (("train", f"a training step (batch {result['train_batch']}, N "
                                 f"{result['patch']})"),
                       ("inference", f"an inference batch ({result['inference_batch']} "
                                     f"patterns, N {result['patch']}, stitched)")):
        runs = result[part]
        if check.gpu:
            mismatches = no_cost.differences(runs)
            plain = runs["uninstrumented"]["measured"]
            measured = (f"{plain['allocations']} allocations, peak "
                        f"{plain['max_memory_allocated'] / 2**20:.1f} MiB in all variants"
                        if not mismatches else "; ".join(mismatches))
            verdict = PASS if not mismatches else FAIL
        else:
            measured = "ran; torch.cuda.memory_stats needs a GPU"
            verdict = NA_CPU
        check.row(f"no cost when off: {what}, stats off / on past limit vs uninstrumented",
                  measured, "equal allocations and peak bytes", verdict)
        cost = result[f"{part}_instrumented_cost"]
        measured = f"{1e3 * cost['seconds']:+.0f} ms"
        if "allocations" in cost:
            measured += f", {cost['allocations']:+d} allocations, peak {cost['peak_mib']:+.1f} MiB"
        # one short stretch per variant: a figure on a GPU, noise on a shared CPU
        check.row(f"patch stats on, first {limit} {part} batches vs uninstrumented",
                  measured, "-", FIGURE if check.gpu else NA_CPU)


def train_step_rows(check: Check, train_rows) -> list[dict]:
    """One row per (batch, variant): step ms against 3 ms at batch 4, else groups/s."""
    from bench.train_steps import bench_train_steps

    s = check.sizes
    rows = []
    for batch, variants in train_rows:
        for variant in variants:
            label = f"training step, gridsize 2, N 64, batch {batch}, {variant}"
            try:
                (row,) = bench_train_steps(check.device, [batch], [variant], s.n_steps)
            except Exception as exc:  # noqa: BLE001 - e.g. torch.compile without a compiler
                # an optional speed-up that cannot run here is a finding, not a failure
                optional = "compile" in variant or "graphs" in variant
                check.row(label, _first_line(exc), "-", NA_OPTIONAL if optional else ERROR)
                continue
            rows.append(row)
            peak = (f", peak {row['peak_device_mib']:.0f} MiB"
                    if row["peak_device_mib"] is not None else "")
            measured = f"{row['step_ms']:.2f} ms, {row['groups_per_s']:,.0f} groups/s{peak}"
            if batch == 4:
                check.target_row(label, measured, f"<= {STEP_TARGET_MS:g} ms",
                                 row["step_ms"] <= STEP_TARGET_MS)
            else:
                check.target_row(label, measured, f">= {GROUPS_TARGET:,} groups/s",
                                 row["groups_per_s"] >= GROUPS_TARGET)
    return rows


def check_compile(check: Check) -> None:
    if not check.sizes.compile_rows:
        check.row("training step with torch.compile", "not run at smoke sizes", "-", NA_CPU)
        return
    check.details["compile"] = train_step_rows(check, check.sizes.compile_rows)


def check_throughput(check: Check) -> None:
    from bench.inference_speed import bench_inference

    s = check.sizes
    rows = train_step_rows(check, s.train_rows)
    (inference,) = bench_inference(check.device, [s.inference_patterns], s.inference_repeats)
    peak = inference["peak_device_rise_mib"]
    host = inference["peak_host_rise_mib"]
    memory = f"peak device +{peak:.0f} MiB" if peak is not None else (
        f"peak host +{host:.0f} MiB" if host is not None else "peak n/a")
    check.target_row(f"inference incl. stitching, {s.inference_patterns:,} patterns, batch 512",
                     f"{inference['patterns_per_s']:,.0f} patterns/s, {memory}",
                     f">= {PATTERNS_TARGET:,} patterns/s",
                     inference["patterns_per_s"] >= PATTERNS_TARGET)
    check.details["throughput"] = {"train": rows, "inference": inference}


def check_ddp(check: Check) -> None:
    s = check.sizes
    train, _ = check.data()
    log = check.work / "logs" / "ddp.log"
    experiment = "gpu_check_ddp"
    started_ms = int(time.time() * 1000)
    seconds = run_module("ptycho_torch.train", [
        "--train_data_file", str(train), "--output_dir", str(check.work / "ddp"),
        "--max_epochs", "1", "--n_images", str(s.ddp_groups), "--gridsize", "2",
        "--batch_size", "4", "--accelerator", check.accelerator,
        "--devices", str(s.ddp_devices), "--strategy", "ddp", "--tracking-uri", check.uri,
        "--experiment-name", experiment], log)  # not --quiet: Lightning names the backend
    client = _client(check.uri)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    # the runs this check started (a reused --work may hold older ones)
    runs = [run for run in client.search_runs([experiment_id])
            if run.info.start_time >= started_ms]
    backend = re.search(r"distributed_backend=(\w+)", log.read_text(errors="replace"))
    backend = backend.group(1) if backend else "?"
    ok = len(runs) == 1 and runs[0].info.status == "FINISHED"
    check.row(f"DDP: train CLI --strategy ddp --devices {s.ddp_devices} ({check.accelerator})",
              f"{seconds:.1f} s, backend {backend}, {len(runs)} run(s) "
              f"{', '.join(r.info.status for r in runs)}", "finishes, one tracked run",
              PASS if ok else FAIL)


def gpu_test_files() -> list[str]:
    """The test files that mark tests ``gpu`` (collecting only them keeps the run short and
    independent of what the other test modules import)."""
    return sorted(str(path.relative_to(ROOT)) for path in (ROOT / "tests").rglob("test_*.py")
                  if "mark.gpu" in path.read_text(errors="replace"))


def check_pytest(check: Check) -> None:
    log = check.work / "logs" / "pytest_gpu.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    files = gpu_test_files()
    if not files:
        check.row("pytest -m gpu", "no test file marks gpu", "all pass", FAIL)
        return
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
               *files]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    log.write_text(done.stdout + done.stderr)
    counts = {word.rstrip("s"): int(n) for n, word in re.findall(
        r"(\d+) (passed|failed|skipped|deselected|errors?|xfailed|xpassed)",
        (done.stdout.strip().splitlines() or [""])[-1])}
    check.details["pytest_gpu"] = {"exit": done.returncode, "counts": counts}
    measured = ", ".join(f"{n} {word}" for word, n in counts.items()) or \
        f"exit {done.returncode}, no summary ({log})"
    broken = counts.get("failed", 0) or counts.get("error", 0) or done.returncode not in (0, 5)
    if broken:
        verdict = FAIL
    elif check.gpu:
        verdict = PASS if counts.get("passed", 0) else FAIL
    else:
        verdict = NA_CPU if counts.get("skipped", 0) else FAIL
    check.row(f"pytest -m gpu ({len(files)} file(s) marking gpu)", measured, "all pass",
              verdict)


RUNNERS = {"baseline": check_baseline, "determinism": check_determinism,
           "no_cost": check_no_cost, "throughput": check_throughput, "ddp": check_ddp,
           "pytest": check_pytest, "compile": check_compile}


# -- the report -------------------------------------------------------------------------
def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}"


def missing_packages() -> list[str]:
    """What a tracked run needs and this Python lacks: each carried package and its
    dependencies, installed at a version their requirements accept."""
    import importlib.metadata as md

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    problems, seen = [], set()
    stack = [Requirement(name) for name in CARRIED]
    while stack:
        requirement = stack.pop()
        key = canonicalize_name(requirement.name)
        try:
            dist = md.distribution(requirement.name)
        except md.PackageNotFoundError:
            if key == "mlflow-skinny":
                try:  # the full mlflow package holds the same code
                    dist = md.distribution("mlflow")
                except md.PackageNotFoundError:
                    problems.append("mlflow-skinny: not installed")
                    continue
            else:
                problems.append(f"{requirement}: not installed")
                continue
        if dist.version not in requirement.specifier:
            problems.append(f"{requirement}: {dist.version} installed")
        if key in seen:
            continue
        seen.add(key)
        for text in dist.requires or []:
            dependency = Requirement(text)
            if dependency.marker is None or dependency.marker.evaluate({"extra": ""}):
                stack.append(dependency)
    return sorted(set(problems))


def to_markdown(result: dict) -> str:
    lines = [f"# GPU acceptance: {result['device_name']} ({result['date']})", "",
             f"`{result['command']}`: mode {result['mode']}, torch {result['torch']}, "
             f"CUDA {result['cuda']}, {result['wall_seconds']:.0f} s in all "
             f"(parts run: {', '.join(result['sections_done'])})", "",
             "| check | measured | target | verdict |", "|---|---|---|---|"]
    lines += [f"| {row['check']} | {row['measured']} | {row['target']} | {row['verdict']} |"
              for row in result["rows"]]
    counts = {v: sum(row["verdict"] == v for row in result["rows"])
              for v in (PASS, MISS, FAIL, ERROR, NA_CPU, NA_OPTIONAL, FIGURE)}
    lines += ["", ", ".join(f"{n} {v}" for v, n in counts.items() if n), ""]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.gpu_check",
        description="The GPU acceptance in one command: the forward-parity baseline on CUDA "
                    "(tracked), determinism, no cost when patch stats are off, throughput "
                    "against the targets, DDP, pytest -m gpu; one table, as .md and .json.")
    parser.add_argument("--out", required=True,
                        help="folder for <date>-<device>-gpu-check[-smoke].md and .json "
                             "(e.g. bench/results)")
    parser.add_argument("--smoke", action="store_true",
                        help="the same code at tiny sizes on the CPU (a few minutes at most) "
                             "(rows that need a GPU say n/a on CPU)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None,
                        help="device (default: cuda, or cpu with --smoke)")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma list of the parts to run, in the order given "
                             f"(default: all: {', '.join(SECTIONS)})")
    parser.add_argument("--work", default=None,
                        help="new (or empty) folder for the runs' data, outputs, logs and "
                             "sqlite store, kept (default: a temporary folder, removed at "
                             "the end)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="seconds after which no further part starts (its row says so; "
                             "a part already running finishes) (default: 300, for 6 minutes "
                             "on an H200; none with --smoke)")
    parser.add_argument("--logs", default=None,
                        help="also copy every step's log (CLI output, pytest) into this "
                             "folder: small, and what a failed row needs")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = "python -m bench.gpu_check"
    sections = [name.strip() for name in args.sections.split(",") if name.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown or not sections:
        parser.error(f"--sections: unknown {unknown or args.sections!r}; choose from "
                     f"{', '.join(SECTIONS)}")
    device = args.device or ("cpu" if args.smoke else "cuda")
    if args.work and Path(args.work).exists() and any(Path(args.work).iterdir()):
        parser.error(f"--work {args.work} is not empty: give a new folder")
    problems = missing_packages()
    if problems:
        print(f"{prog}: error: missing or unfit packages: {'; '.join(problems)} "
              "(tools/gpu_wheels.sh makes the wheels; README: On a GPU machine)",
              file=sys.stderr)
        return 2
    # before CUDA starts: cuBLAS is deterministic only with this workspace setting
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # the CLIs run as subprocesses (and start their own): relative PYTHONPATH entries
    # (PYTHONPATH=.:gpu_site) must not depend on their working folder
    os.environ["PYTHONPATH"] = os.pathsep.join(
        str(Path(entry).resolve()) for entry in
        [str(ROOT), *os.environ.get("PYTHONPATH", "").split(os.pathsep)] if entry)
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        print(f"{prog}: error: no CUDA device is visible (--smoke runs on the CPU)",
              file=sys.stderr)
        return 2
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    check = Check(device, SMOKE if args.smoke else FULL, work)
    budget_s = args.budget_s if args.budget_s is not None else (
        float("inf") if args.smoke else 300.0)
    started = time.perf_counter()
    stem = Path(args.out) / f"{today()}-{device}-gpu-check{'-smoke' if args.smoke else ''}"
    facts = {"date": today(), "device": device, "device_name": device_name(device),
             "torch": torch.__version__, "cuda": torch.version.cuda or "none",
             "mode": "smoke" if args.smoke else "full",
             "command": " ".join([prog, *(argv if argv is not None else sys.argv[1:])]),
             "sizes": asdict(check.sizes)}

    def report(done: list[str]) -> str:
        """The table so far, written after every part: a run stopped by a time limit
        still leaves the rows it finished."""
        result = {**facts, "wall_seconds": time.perf_counter() - started,
                  "sections_done": done, "rows": check.rows, "details": check.details}
        markdown = to_markdown(result)
        write_results(stem, json.loads(json.dumps(result, default=str)), markdown)
        return markdown

    try:
        for index, name in enumerate(sections):
            elapsed = time.perf_counter() - started
            if elapsed > budget_s:
                check.row(name, f"not started: {elapsed:.0f} s spent of the {budget_s:g} s "
                          "budget", "-", NA_OPTIONAL if name == "compile" else ERROR)
                markdown = report(sections[: index + 1])
                continue
            print(f"[gpu_check] {name} ...", flush=True)
            section_started = time.perf_counter()
            try:
                RUNNERS[name](check)
            except Exception as exc:  # noqa: BLE001 - one broken part must not hide the others
                check.row(name, _first_line(exc), "-", ERROR)
            check.details.setdefault("section_seconds", {})[name] = (
                time.perf_counter() - section_started)
            markdown = report(sections[: index + 1])
    finally:
        if args.logs and (work / "logs").is_dir():
            shutil.copytree(work / "logs", args.logs, dirs_exist_ok=True)
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    print(markdown)
    print(f"wrote {stem}.md and {stem}.json")
    return 1 if any(row["verdict"] in (FAIL, ERROR) for row in check.rows) else 0


if __name__ == "__main__":
    sys.exit(main())
