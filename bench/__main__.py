"""python -m bench: speed and overhead figures, medians measured side by side in one run.

Sections: training step latency (baseline config and large batches, fp32 and bf16
autocast), inference throughput including stitching, patch-stats instrumentation overhead
(same short training with the flag off and on, limit 2), and tracking overhead (--logger
none vs the default MLflow + TensorBoard). Prints tables; writes
bench/results/<date>-<device>.json and .md.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results"


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def bench_train_steps(device: str, batch_sizes: list[int], dtypes: list[str],
                      n_steps: int) -> list[dict]:
    """Median optimizer-step latency of PtychoPINN (gridsize 2, N 64) on synthetic batches."""
    from ptycho_torch.config import ModelConfig
    from ptycho_torch.model import PtychoPINN
    from ptycho_torch.simulate import make_probe

    rows = []
    for batch in batch_sizes:
        for dtype in dtypes:
            torch.manual_seed(0)
            model = PtychoPINN(ModelConfig(patch_size_px=64, n_channels=4, nphotons=1e9),
                               torch.from_numpy(make_probe(64))).to(device)
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
            x = torch.rand(batch, 4, 64, 64, device=device)
            offsets = torch.randn(batch, 4, 2, device=device) * 3
            norm = torch.ones(batch, device=device)
            autocast = torch.autocast(device_type=device, dtype=torch.bfloat16,
                                      enabled=dtype == "bf16")
            times = []
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            for step in range(n_steps + 2):
                _sync(device)
                started = time.perf_counter()
                optimizer.zero_grad(set_to_none=True)
                with autocast:
                    out = model(x, offsets, norm)
                loss = model.loss({k: v.float() if v.is_floating_point() else v
                                   for k, v in out.items()})
                loss.backward()
                optimizer.step()
                _sync(device)
                if step >= 2:  # warm-up excluded
                    times.append(time.perf_counter() - started)
            median = statistics.median(times)
            rows.append({"batch": batch, "dtype": dtype, "step_ms": 1e3 * median,
                         "groups_per_s": batch / median, "n_steps": n_steps,
                         "peak_device_mib": (torch.cuda.max_memory_allocated() / 2**20
                                             if device == "cuda" else None)})
    return rows


def bench_inference(device: str, sizes: list[int], repeats: int) -> list[dict]:
    """Patterns/s of reconstruct() (forward + stitching), gridsize 1, N 64, raster scan."""
    from ptycho_torch.config import ModelConfig
    from ptycho_torch.data import GroupedScan, ScanData
    from ptycho_torch.inference import reconstruct
    from ptycho_torch.model import PtychoPINN
    from ptycho_torch.reassembly import canvas_frame
    from ptycho_torch.simulate import make_probe

    probe = make_probe(64)
    model = PtychoPINN(ModelConfig(patch_size_px=64, n_channels=1), torch.from_numpy(probe))
    model = model.to(device).eval()
    rows = []
    for n in sizes:
        side = int(np.ceil(np.sqrt(n)))
        gy, gx = np.meshgrid(np.arange(side) * 7.0 + 40, np.arange(side) * 7.0 + 40,
                             indexing="ij")
        x, y = gx.ravel()[:n], gy.ravel()[:n]
        rng = np.random.default_rng(0)
        scan = ScanData(Path("synthetic"), rng.random((n, 64, 64), dtype=np.float32), probe,
                        x, y, x, y, np.zeros(n, dtype=np.int64), None, {})
        grouped = GroupedScan(scan, np.arange(n)[:, None], 1.0)
        shape, origin = canvas_frame(np.stack([x, y], 1), 64)
        times = []
        for _ in range(repeats):
            _sync(device)
            started = time.perf_counter()
            reconstruct(model, grouped, shape, origin, device, 512, 20, progress=False)
            _sync(device)
            times.append(time.perf_counter() - started)
        median = statistics.median(times)
        rows.append({"patterns": n, "seconds": median, "patterns_per_s": n / median,
                     "repeats": repeats})
    return rows


def _train_once(data: Path, out: Path, extra: list[str]) -> float:
    from ptycho_torch import train

    argv = ["--train_data_file", str(data), "--output_dir", str(out), "--max_epochs", "2",
            "--n_images", "32", "--gridsize", "2", "--batch_size", "4", "--quiet", *extra]
    started = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):
        code = train.cli_main(argv)
    if code != 0:
        raise RuntimeError(f"training failed with exit {code}: {argv}")
    return time.perf_counter() - started


def bench_overheads(device: str, repeats: int) -> dict:
    """End-to-end CLI training, variants interleaved so drift hits all alike."""
    import logging

    from ptycho_torch.simulate import simulate_scan, split_scan

    logging.disable(logging.CRITICAL)
    accelerator = "gpu" if device == "cuda" else "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        scan = simulate_scan(n_images=144, patch_size=64, seed=0)
        np.savez(tmp / "train.npz", **split_scan(scan)["train"])
        uri = f"sqlite:///{tmp}/mlruns/mlflow.db"
        variants = {
            "logger none, stats off": ["--logger", "none"],
            "logger none, stats on (limit 2)": ["--logger", "none", "--log-patch-stats",
                                                "--patch-stats-limit", "2"],
            "default loggers, stats off": ["--tracking-uri", uri],
        }
        times: dict[str, list[float]] = {name: [] for name in variants}
        _train_once(tmp / "train.npz", tmp / "warmup", ["--logger", "none", "--accelerator",
                                                         accelerator])
        for rep in range(repeats):
            for i, (name, extra) in enumerate(variants.items()):
                out = tmp / f"run-{rep}-{i}"
                times[name].append(_train_once(tmp / "train.npz", out,
                                               [*extra, "--accelerator", accelerator]))
    logging.disable(logging.NOTSET)
    medians = {name: statistics.median(values) for name, values in times.items()}
    base = medians["logger none, stats off"]
    return {"repeats": repeats, "median_seconds": medians, "all_seconds": times,
            "patch_stats_ratio": medians["logger none, stats on (limit 2)"] / base,
            "tracking_ratio": medians["default loggers, stats off"] / base}


def to_markdown(result: dict) -> str:
    lines = [f"# Benchmarks: {result['device_name']} ({result['date']})", "",
             f"torch {result['torch']}, mode {result['mode']}", "",
             "## Training step (gridsize 2, N 64; median)", "",
             "| batch | dtype | step ms | groups/s | peak device MiB |", "|---|---|---|---|---|"]
    for row in result["train"]:
        peak = "-" if row["peak_device_mib"] is None else f"{row['peak_device_mib']:.0f}"
        lines.append(f"| {row['batch']} | {row['dtype']} | {row['step_ms']:.1f} | "
                     f"{row['groups_per_s']:.1f} | {peak} |")
    lines += ["", "## Inference incl. stitching (gridsize 1, N 64; median)", "",
              "| patterns | seconds | patterns/s |", "|---|---|---|"]
    for row in result["inference"]:
        lines.append(f"| {row['patterns']} | {row['seconds']:.2f} | "
                     f"{row['patterns_per_s']:.0f} |")
    ov = result["overheads"]
    lines += ["", f"## Overheads (train CLI, 2 epochs x 32 groups, {ov['repeats']} interleaved "
                  "repeats; median)", "", "| variant | median s |", "|---|---|"]
    lines += [f"| {name} | {value:.2f} |" for name, value in ov["median_seconds"].items()]
    lines += ["", f"- patch stats on / off: **{ov['patch_stats_ratio']:.3f}**",
              f"- default loggers / none: **{ov['tracking_ratio']:.3f}**", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="device to measure (default: %(default)s)")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes and few repeats (CPU-friendly)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("python -m bench: error: --device cuda but no CUDA device is visible",
              file=sys.stderr)
        return 2
    quick = args.quick
    device_name = torch.cuda.get_device_name(0) if args.device == "cuda" else \
        f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"
    result = {
        "date": time.strftime("%Y-%m-%d"), "device": args.device, "device_name": device_name,
        "torch": torch.__version__, "mode": "quick" if quick else "full",
        "train": bench_train_steps(args.device, [4, 64] if quick else [4, 64, 256],
                                   ["fp32", "bf16"], 5 if quick else 30),
        "inference": bench_inference(args.device, [1024, 4096] if quick else
                                     [1024, 4096, 16384], 2 if quick else 5),
        "overheads": bench_overheads(args.device, 3 if quick else 5),
    }
    markdown = to_markdown(result)
    print(markdown)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"{result['date']}-{args.device}{'-quick' if quick else ''}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown)
    print(f"wrote {stem}.json and {stem}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
