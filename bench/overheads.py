"""End-to-end cost of instrumentation and tracking: the train CLI's wall time per variant.

Each run is a whole ``python -m ptycho_torch.train`` process (interpreter start, imports,
tracking set-up, 2 epochs x 32 groups, outputs), as a user meets it; variants are
interleaved so drift hits all alike. The start-up alone (``--help``) is timed beside them.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BASE = "logger none, stats off"
PATCH_STATS = "logger none, stats on (limit 2)"
TRACKING = "default loggers, stats off"
STARTUP = "start-up only (--help)"


def run_train_cli(args: list[str], cwd: Path | None = None) -> float:
    """Wall seconds of one ``python -m ptycho_torch.train`` process (run in ``cwd``: the code
    tree it imports); RuntimeError (with its last output lines) when it fails."""
    command = [sys.executable, "-m", "ptycho_torch.train", *args]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=cwd)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-5:])
        raise RuntimeError(f"exit {done.returncode}: {' '.join(command)}\n{tail}")
    return seconds


def train_args(data: Path, out: Path, extra: list[str]) -> list[str]:
    """The short training every variant runs (gridsize 2, 32 groups, 2 epochs, batch 4)."""
    return ["--train_data_file", str(data), "--output_dir", str(out), "--max_epochs", "2",
            "--n_images", "32", "--gridsize", "2", "--batch_size", "4", "--quiet", *extra]


def bench_overheads(device: str, repeats: int) -> dict:
    """Median wall time per variant over ``repeats`` interleaved rounds after one warm-up
    run, and the ratios patch stats on / off and default loggers / none."""
    from ptycho_torch.simulate import simulate_scan, write_scans

    accelerator = ["--accelerator", "gpu" if device == "cuda" else "cpu"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = write_scans(tmp / "data", simulate_scan(n_images=144, patch_size=64,
                                                       seed=0))["train"]
        variants = {
            BASE: ["--logger", "none"],
            PATCH_STATS: ["--logger", "none", "--log-patch-stats", "--patch-stats-limit", "2"],
            TRACKING: ["--tracking-uri", f"sqlite:///{tmp}/mlruns/mlflow.db"],
        }
        times: dict[str, list[float]] = {name: [] for name in [*variants, STARTUP]}
        run_train_cli(train_args(data, tmp / "warmup", ["--logger", "none", *accelerator]))
        for rep in range(repeats):
            for i, (name, extra) in enumerate(variants.items()):
                out = tmp / f"run-{rep}-{i}"
                times[name].append(run_train_cli(train_args(data, out, [*extra, *accelerator])))
            times[STARTUP].append(run_train_cli(["--help"]))
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {"repeats": repeats, "median_seconds": medians, "all_seconds": times,
            "patch_stats_ratio": medians[PATCH_STATS] / medians[BASE],
            "tracking_ratio": medians[TRACKING] / medians[BASE]}
