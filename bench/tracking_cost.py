"""What tracking costs a training run: the same training with ``--logger none`` and with the
default loggers (MLflow on a fresh sqlite store + TensorBoard), interleaved, as whole CLI
processes (imports, store set-up, uploads: everything a user waits for).

Two workloads: a short one (1 epoch, 32 groups) whose difference is the fixed cost per run,
and a longer one (3 epochs, 128 groups, batch 4) for the ratio and the cost per step.

    python -m bench.tracking_cost --repeats 3
    python -m bench.tracking_cost --tree before=../old-checkout --tree after=.

prints a markdown table and writes ``bench/results/<date>-tracking-cost.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import device_name, results_dir, today, write_results
from bench.overheads import run_train_cli

WORKLOADS = {  # name: train flags
    "short": ["--n_images", "32", "--max_epochs", "1", "--batch_size", "8"],
    "long": ["--n_images", "128", "--max_epochs", "3", "--batch_size", "4"],
}
MODES = {"none": ["--logger", "none"], "tracked": []}


def _train(data: Path, work: Path, flags: list[str], mode: str, index: int,
           tree: Path) -> float:
    out = work / f"{mode}-{index}"
    return run_train_cli(["--train_data_file", str(data), "--output_dir", str(out),
                          "--gridsize", "2", "--n-filters-scale", "1", "--val-fraction", "0",
                          "--quiet", *flags, *MODES[mode], "--tracking-uri",
                          f"sqlite:///{work / 'store' / 'mlflow.db'}"], cwd=tree)


def _steps(work: Path, mode: str) -> int:
    summary = json.loads((work / f"{mode}-0" / "train_summary.json").read_text())
    return int(summary["global_step"])


def _workload(name: str, flags: list[str], repeats: int, data: Path,
              trees: dict[str, Path]) -> dict[str, dict]:
    """One workload: every (tree, mode) run ``repeats`` times, interleaved."""
    with tempfile.TemporaryDirectory(prefix=f"tracking-cost-{name}-") as tmp:
        works = {label: Path(tmp) / label for label in trees}
        # one warm-up of each (page cache, the store's schema), not counted
        for label, tree in trees.items():
            for mode in MODES:
                _train(data, works[label], flags, mode, 99, tree)
        times = {(label, mode): [] for label in trees for mode in MODES}
        for index in range(repeats):
            for label, tree in trees.items():
                for mode in MODES:
                    times[label, mode].append(_train(data, works[label], flags, mode, index,
                                                     tree))
        steps = {label: _steps(works[label], "none") for label in trees}
    rows = {}
    for label in trees:
        none, tracked = (statistics.median(times[label, m]) for m in MODES)
        rows[label] = {"steps": steps[label], "none_s": times[label, "none"],
                       "tracked_s": times[label, "tracked"], "median_none_s": none,
                       "median_tracked_s": tracked, "ratio": tracked / none,
                       "added_s": tracked - none}
    return rows


def measure(repeats: int, data: Path, trees: dict[str, Path]) -> dict:
    """Median wall seconds per (workload, code tree, mode), all runs of a workload
    interleaved: none/tracked, tree after tree."""
    rows = {name: _workload(name, flags, repeats, data, trees)
            for name, flags in WORKLOADS.items()}
    summary = {}
    for label in trees:
        short, long_ = rows["short"][label], rows["long"][label]
        summary[label] = {"fixed_cost_s": short["added_s"],
                          "per_step_cost_s": (long_["added_s"] - short["added_s"])
                          / max(long_["steps"] - short["steps"], 1)}
    return {"rows": rows, "summary": summary, "repeats": repeats,
            "trees": {label: str(tree) for label, tree in trees.items()},
            "machine": device_name("cpu")}


def to_markdown(result: dict) -> str:
    lines = ["| workload | code | steps | median none s | median tracked s | ratio | "
             "added s |", "|---|---|---|---|---|---|---|"]
    for name, by_tree in result["rows"].items():
        for label, row in by_tree.items():
            lines.append(f"| {name} | {label} | {row['steps']} | {row['median_none_s']:.2f} | "
                         f"{row['median_tracked_s']:.2f} | {row['ratio']:.2f} | "
                         f"{row['added_s']:.2f} |")
    lines.append("")
    for label, figures in result["summary"].items():
        lines.append(f"{label}: fixed cost per run {figures['fixed_cost_s']:.2f} s, per step "
                     f"{1000 * figures['per_step_cost_s']:.1f} ms")
    lines.append(f"({result['repeats']} interleaved repeats, medians; {result['machine']})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tracking_cost",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3,
                        help="interleaved repeats per workload and mode (default: %(default)s)")
    parser.add_argument("--data", default=None,
                        help="training NPZ (default: simulate a 256-point scan, N 32, once)")
    parser.add_argument("--out", default=None,
                        help="folder for <date>-tracking-cost.json/.md "
                             "(default: bench/results)")
    parser.add_argument("--tree", action="append", default=[], metavar="LABEL=PATH",
                        help="a checkout to measure (repeatable: e.g. before=../old "
                             "after=.), its runs interleaved with the others' "
                             "(default: this checkout, labelled 'this')")
    args = parser.parse_args(argv)
    trees = {"this": Path.cwd()}
    if args.tree:
        try:
            trees = {label: Path(path).resolve()
                     for label, path in (item.split("=", 1) for item in args.tree)}
        except ValueError:
            parser.error("--tree takes LABEL=PATH")
    with tempfile.TemporaryDirectory(prefix="tracking-cost-data-") as tmp:
        data = Path(args.data) if args.data else _simulate(Path(tmp))
        result = measure(args.repeats, data, trees)
    markdown = to_markdown(result)
    folder = Path(args.out) if args.out else results_dir()
    write_results(folder / f"{today()}-tracking-cost", result, markdown + "\n")
    print(markdown)
    return 0


def _simulate(folder: Path) -> Path:
    subprocess.run([sys.executable, "-m", "ptycho_torch.simulate", "--output-dir", str(folder),
                    "--n-images", "512", "--patch-size", "32", "--seed", "0"],
                   check=True, capture_output=True)
    return folder / "train.npz"


if __name__ == "__main__":
    sys.exit(main())
