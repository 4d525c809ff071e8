"""python -m bench.quality: reconstruction quality per configuration under one time budget.

For each named configuration: simulate a scan (train.npz / test.npz, the two halves of one
object), train with a wall-clock budget (``--max-time``), reconstruct test.npz, and read its
metrics.json. Prints a table; writes bench/results/<date>-<device>-quality.{json,md} and a
PNG with every reconstruction's amplitude and phase beside the ground truth.

Each step runs the project's own CLIs as subprocesses, so a row is exactly what a user gets
from those commands (they are printed, and stored in the JSON).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench.common import results_dir, today, write_results

# name -> (simulate flags, train flags[, split trained on]); all train with gridsize 2,
# batch 16, Poisson loss unless their flags say otherwise (later flags win), on train.npz
# unless a third entry says "test": self-supervised on the very scan that is then
# reconstructed (its diffraction only; objectGuess never enters training)
GS3 = ["--gridsize", "3", "--neighbors", "9"]
CONFIGS: dict[str, tuple] = {
    "reference-64": (["--patch-size", "64"], ["--n-filters-scale", "2"]),
    "reference-64-self": (["--patch-size", "64"], ["--n-filters-scale", "2"], "test"),
    "n32": (["--patch-size", "32"], ["--n-filters-scale", "1"]),
    "n32-1e9": (["--patch-size", "32", "--n-photons", "1e9"], ["--n-filters-scale", "1"]),
    "n32-zoom3": (["--patch-size", "32", "--object-zoom", "3"], ["--n-filters-scale", "1"]),
    "n32-zoom3-1e9": (["--patch-size", "32", "--object-zoom", "3", "--n-photons", "1e9"],
                      ["--n-filters-scale", "1"]),
    "n32-gs1": (["--patch-size", "32"], ["--n-filters-scale", "1", "--gridsize", "1"]),
    "n32-b4": (["--patch-size", "32"], ["--n-filters-scale", "1", "--batch_size", "4"]),
    "n32-zoom3-b4": (["--patch-size", "32", "--object-zoom", "3"],
                     ["--n-filters-scale", "1", "--batch_size", "4"]),
    "n32-mae": (["--patch-size", "32"], ["--n-filters-scale", "1", "--torch-loss-mode", "mae"]),
    "n32-zoom3-mae": (["--patch-size", "32", "--object-zoom", "3"],
                      ["--n-filters-scale", "1", "--torch-loss-mode", "mae"]),
    "n32-fine": (["--patch-size", "32"], ["--n-filters-scale", "1", "--decoder", "fine"]),
    "n32-self": (["--patch-size", "32"], ["--n-filters-scale", "1"], "test"),
    "n32-fine-self": (["--patch-size", "32"], ["--n-filters-scale", "1", "--decoder", "fine"],
                      "test"),
    "n32-zoom3-self": (["--patch-size", "32", "--object-zoom", "3"],
                       ["--n-filters-scale", "1"], "test"),
    "n32-gs3": (["--patch-size", "32"], ["--n-filters-scale", "1", *GS3]),
    "n32-gs3-self": (["--patch-size", "32"], ["--n-filters-scale", "1", *GS3], "test"),
    "n32-zoom5-b4": (["--patch-size", "32", "--object-zoom", "5"],
                     ["--n-filters-scale", "1", "--batch_size", "4"]),
}


def _run(command: list[str], log: Path) -> float:
    print("$", " ".join(command), flush=True)
    started = time.perf_counter()
    with log.open("w") as handle:
        done = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise RuntimeError(f"exit {done.returncode}: {' '.join(command)} (log: {log})")
    return time.perf_counter() - started


def train_split(name: str) -> str:
    """The split a configuration trains on: "train", or the third entry of its CONFIGS row."""
    return CONFIGS[name][2] if len(CONFIGS[name]) > 2 else "train"


def config_commands(name: str, folder: Path, minutes: float, accelerator: str,
                    seed: int) -> dict[str, list[str]]:
    """The CLI commands of one configuration by step: simulate, train, and three scorings."""
    sim_flags, train_flags, *_ = CONFIGS[name]
    split = train_split(name)
    python = sys.executable
    data, model = folder / "data", folder / "model"

    def infer(split: str, out: Path, *extra: str) -> list[str]:
        return [python, "-m", "ptycho_torch.inference", "--model_path", str(model),
                "--test_data", str(data / f"{split}.npz"), "--output_dir", str(out), *extra,
                "--accelerator", accelerator, "--logger", "none", "--quiet"]

    return {
        "simulate": [python, "-m", "ptycho_torch.simulate", "--output-dir", str(data),
                     "--seed", str(seed), *sim_flags],
        "train": [python, "-m", "ptycho_torch.train", "--train_data_file",
                  str(data / f"{split}.npz"), "--output_dir", str(model), "--gridsize", "2",
                  "--batch_size", "16", "--max_epochs", "100000", "--max-time", str(minutes),
                  "--seed", str(seed), "--accelerator", accelerator, "--logger", "none",
                  "--quiet", *train_flags],
        "inference": infer("test", folder / "inference"),
        # the same model and scan, overlaps averaged with the probe intensity as weight
        "inference-probe": infer("test", folder / "inference-probe", "--stitch-weight",
                                 "probe"),
        # the split it trained on, scored too: the gap to test.npz is generalization
        "inference-train": infer("train", folder / "inference-train"),
    }


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def is_finished(folder: Path, minutes: float) -> bool:
    """Every output of the configuration is there, trained with the same budget."""
    outputs = [folder / "model" / "train_summary.json",
               *(folder / step / "metrics.json"
                 for step in ("inference", "inference-train", "inference-probe"))]
    return all(path.is_file() for path in outputs) and _read_json(
        folder / "model" / "config.json")["training"]["max_time_minutes"] == minutes


def run_config(name: str, work: Path, minutes: float, accelerator: str, seed: int,
               reuse: bool = False) -> dict:
    """One configuration's row: its commands run (or reused), their outputs read back."""
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    commands = config_commands(name, folder, minutes, accelerator, seed)
    if reuse and is_finished(folder, minutes):
        print(f"reusing {folder} (same budget, finished)", flush=True)
        seconds = {}
    else:
        seconds = {step: _run(cmd, folder / f"{step}.log") for step, cmd in commands.items()}
    summary = _read_json(folder / "model" / "train_summary.json")
    return {"name": name, "trained_on": f"{train_split(name)}.npz",
            "train_metrics": _read_json(folder / "inference-train" / "metrics.json"),
            "probe_stitch_metrics": _read_json(folder / "inference-probe" / "metrics.json"),
            "commands": {k: " ".join(v) for k, v in commands.items()},
            "seconds": seconds, "train_seconds": summary["seconds"],
            "epochs": summary["epochs"], "global_step": summary["global_step"],
            "n_train_groups": summary["n_train_groups"],
            "metrics": _read_json(folder / "inference" / "metrics.json"),
            "reconstruction": str(folder / "inference" / "reconstruction.npz"),
            "test_data": str(folder / "data" / "test.npz")}


def to_markdown(result: dict) -> str:
    lines = [f"# Reconstruction quality per configuration: {result['device']} "
             f"({result['date']})", "",
             f"Seed {result.get('seed', 0)} (simulation and training). "
             f"Training budget {result['minutes']} min wall clock each (`--max-time`), "
             "gridsize 2, batch 16 and Poisson loss unless named (b4: batch 4; gs1, gs3: gridsize "
             "1, 3 (K 9); mae: MAE on amplitudes; fine: --decoder fine; zoomZ: simulate "
             "--object-zoom Z), lr 1e-3; metrics of "
             "`python -m ptycho_torch.inference` on test.npz (the other half of the object).",
             "Rows marked *self* trained on test.npz's diffraction (self-supervised on the "
             "scan reconstructed; its ground truth never enters training). The last column "
             "scores train.npz with the same model: its gap to the amp SSIM column is "
             "generalization to the unseen half. The column before it stitches test.npz "
             "with `--stitch-weight probe` (overlaps weighted by the probe intensity) "
             "instead of the reference's plain average of central crops.",
             "", "| config | trained on | epochs | steps | train s | amp SSIM | phase SSIM | "
             "amp PSNR | phase PSNR | amp FRC50 | phase RMS rad | amp r | phase r | "
             "probe-weighted amp / phase SSIM | train.npz amp / phase SSIM |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        m = row["metrics"]
        t, p = row["train_metrics"], row["probe_stitch_metrics"]
        lines.append(f"| {row['name']} | {row['trained_on']} | {row['epochs']} | "
                     f"{row['global_step']} | "
                     f"{row['train_seconds']:.0f} | {m['amp_ssim']:.3f} | "
                     f"{m['phase_ssim']:.3f} | {m['amp_psnr']:.2f} | {m['phase_psnr']:.2f} | "
                     f"{m['amp_frc50']:.3f} | {m['phase_rms_rad']:.3f} | "
                     f"{m['amp_pearson']:.3f} | {m['phase_pearson']:.3f} | "
                     f"{p['amp_ssim']:.3f} / {p['phase_ssim']:.3f} | "
                     f"{t['amp_ssim']:.3f} / {t['phase_ssim']:.3f} |")
    lines += ["", "Commands of each row are in the JSON file beside this one.", ""]
    return "\n".join(lines)


def save_montage(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ptycho_torch.data import load_scan
    from ptycho_torch.metrics import global_phase_aligned

    fig, axes = plt.subplots(len(rows), 4, figsize=(16, 3.2 * len(rows)), squeeze=False)
    for row, ax in zip(rows, axes, strict=True):
        with np.load(row["reconstruction"]) as npz:
            obj, weight = npz["object"], npz["weight"]
        gt = load_scan(row["test_data"]).object_guess
        covered = weight > 0
        # shown as scored: no constant phase offset, amplitude scaled to the truth's mean;
        # each pair of panels shares the truth's colour range
        gt = np.where(covered, gt, 0)
        obj = global_phase_aligned(obj, gt)
        amp = np.abs(obj) * np.abs(gt)[covered].mean() / max(np.abs(obj)[covered].mean(), 1e-12)
        amp_range = {"vmin": 0.0, "vmax": float(np.abs(gt).max())}
        phase_range = {"vmin": float(np.angle(gt)[covered].min()),
                       "vmax": float(np.angle(gt)[covered].max())}
        panels = [(amp, "amplitude", "gray", amp_range),
                  (np.angle(obj), "phase", "twilight", phase_range),
                  (np.abs(gt), "true amplitude", "gray", amp_range),
                  (np.angle(gt), "true phase", "twilight", phase_range)]
        for a, (image, label, cmap, limits) in zip(ax, panels, strict=True):
            a.imshow(image, cmap=cmap, **limits)
            a.set_title(f"{row['name']}: {label}", fontsize=9)
            a.axis("off")
        m = row["metrics"]
        ax[0].set_title(f"{row['name']}: amplitude (SSIM {m['amp_ssim']:.2f})", fontsize=9)
        ax[1].set_title(f"{row['name']}: phase (SSIM {m['phase_ssim']:.2f})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.quality",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--configs", default="reference-64,n32,n32-1e9,n32-zoom3",
                        help=f"comma list of configurations: {', '.join(CONFIGS)} "
                             "(default: %(default)s)")
    parser.add_argument("--minutes", type=float, default=8.0,
                        help="training wall-clock budget per configuration (default: "
                             "%(default)s)")
    parser.add_argument("--work", default="outputs/quality",
                        help="folder for scans, models and reconstructions (default: "
                             "%(default)s)")
    parser.add_argument("--accelerator", choices=["cpu", "gpu"], default="cpu",
                        help="where to train and reconstruct (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed (default: %(default)s)")
    parser.add_argument("--reuse", action="store_true",
                        help="keep configurations already finished in --work with the same "
                             "budget instead of running them again")
    parser.add_argument("--out", default=str(results_dir()),
                        help="folder for the result files (default: bench/results)")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown or not names:
        parser.error(f"--configs: unknown {unknown}; choose from {', '.join(CONFIGS)}")
    if not args.minutes > 0:
        parser.error("--minutes must be > 0")
    rows = [run_config(name, Path(args.work), args.minutes, args.accelerator, args.seed,
                       args.reuse) for name in names]
    result = {"date": today(), "device": args.accelerator,
              "minutes": args.minutes, "seed": args.seed, "rows": rows}
    markdown = to_markdown(result)
    print(markdown)
    stem = Path(args.out) / f"{result['date']}-{args.accelerator}-quality"
    write_results(stem, result, markdown)
    save_montage(rows, stem.with_suffix(".png"))
    print(f"wrote {stem}.json, .md and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
