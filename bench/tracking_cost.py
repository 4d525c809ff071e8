"""What tracking costs a training run: the same training with ``--logger none`` and with the
default loggers (MLflow on a fresh sqlite store + TensorBoard), interleaved, as whole CLI
processes (imports, store set-up, uploads: everything a user waits for).

Two workloads: a short one (1 epoch, 32 groups) whose difference is the fixed cost per run,
and a longer one (3 epochs, 128 groups, batch 4) for the ratio and the cost per step.

    python -m bench.tracking_cost --repeats 3

prints a markdown table and writes ``bench/results/tracking_cost.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORKLOADS = {  # name: train flags
    "short": ["--n_images", "32", "--max_epochs", "1", "--batch_size", "8"],
    "long": ["--n_images", "128", "--max_epochs", "3", "--batch_size", "4"],
}
MODES = {"none": ["--logger", "none"], "tracked": []}


def _train(data: Path, work: Path, flags: list[str], mode: str, index: int) -> float:
    out = work / f"{mode}-{index}"
    command = [sys.executable, "-m", "ptycho_torch.train", "--train_data_file", str(data),
               "--output_dir", str(out), "--gridsize", "2", "--n-filters-scale", "1",
               "--val-fraction", "0", "--quiet", *flags, *MODES[mode],
               "--tracking-uri", f"sqlite:///{work / 'store' / 'mlflow.db'}"]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"training failed ({done.returncode}): {done.stderr[-800:]}")
    return seconds


def _steps(work: Path, mode: str) -> int:
    summary = json.loads((work / f"{mode}-0" / "train_summary.json").read_text())
    return int(summary["global_step"])


def measure(repeats: int, data: Path) -> dict:
    """Median wall seconds per (workload, mode), runs interleaved none/tracked."""
    rows = {}
    for name, flags in WORKLOADS.items():
        with tempfile.TemporaryDirectory(prefix=f"tracking-cost-{name}-") as tmp:
            work = Path(tmp)
            # one warm-up of each (page cache, the store's schema), not counted
            for mode in MODES:
                _train(data, work, flags, mode, 99)
            times: dict[str, list[float]] = {mode: [] for mode in MODES}
            for index in range(repeats):
                for mode in MODES:
                    times[mode].append(_train(data, work, flags, mode, index))
            steps = _steps(work, "none")
        none, tracked = (statistics.median(times[m]) for m in MODES)
        rows[name] = {"steps": steps, "none_s": times["none"], "tracked_s": times["tracked"],
                      "median_none_s": none, "median_tracked_s": tracked,
                      "ratio": tracked / none, "added_s": tracked - none}
    short, long_ = rows["short"], rows["long"]
    per_step = ((long_["added_s"] - short["added_s"])
                / max(long_["steps"] - short["steps"], 1))
    return {"rows": rows, "fixed_cost_s": short["added_s"], "per_step_cost_s": per_step,
            "repeats": repeats, "machine": f"{platform.node()} ({platform.processor() or 'cpu'})"}


def to_markdown(result: dict) -> str:
    lines = ["| workload | steps | median none s | median tracked s | ratio | added s |",
             "|---|---|---|---|---|---|"]
    for name, row in result["rows"].items():
        lines.append(f"| {name} | {row['steps']} | {row['median_none_s']:.2f} | "
                     f"{row['median_tracked_s']:.2f} | {row['ratio']:.2f} | "
                     f"{row['added_s']:.2f} |")
    lines.append("")
    lines.append(f"fixed cost per run: {result['fixed_cost_s']:.2f} s; per step: "
                 f"{1000 * result['per_step_cost_s']:.1f} ms "
                 f"({result['repeats']} interleaved repeats, medians)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tracking_cost",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3,
                        help="interleaved repeats per workload and mode (default: %(default)s)")
    parser.add_argument("--data", default=None,
                        help="training NPZ (default: simulate a 256-point scan, N 32, once)")
    parser.add_argument("--output", default="bench/results/tracking_cost.json",
                        help="JSON written with every timing (default: %(default)s)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tracking-cost-data-") as tmp:
        data = Path(args.data) if args.data else _simulate(Path(tmp))
        result = measure(args.repeats, data)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(to_markdown(result))
    return 0


def _simulate(folder: Path) -> Path:
    subprocess.run([sys.executable, "-m", "ptycho_torch.simulate", "--output-dir", str(folder),
                    "--n-images", "512", "--patch-size", "32", "--seed", "0"],
                   check=True, capture_output=True)
    return folder / "train.npz"


if __name__ == "__main__":
    sys.exit(main())
