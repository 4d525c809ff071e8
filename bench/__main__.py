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


def _proc_status_kib(field: str) -> float | None:
    """A /proc/self/status memory field (VmRSS, VmHWM) in KiB; None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return float(line.split()[1])
    except OSError:
        return None
    return None


def _reset_host_peak() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


class _Contiguous(torch.nn.Module):
    """The network in the plain NCHW layout (the model hands it channels-last input)."""

    def __init__(self, network: torch.nn.Module):
        super().__init__()
        self.network = network

    def forward(self, x):
        return self.network(x.contiguous())


def bench_train_steps(device: str, batch_sizes: list[int], dtypes: list[str],
                      n_steps: int) -> list[dict]:
    """Median optimizer-step latency of PtychoPINN (gridsize 2, N 64) on synthetic batches.

    A variant is a dtype (fp32, or bf16 autocast), optionally with "+nchw" (network in the
    plain contiguous layout instead of the model's channels-last, for comparison) and/or
    "+compile" (torch.compile of the network; the physics stays eager: complex FFTs).
    Compilation happens in the excluded warm-up steps."""
    from ptycho_torch.config import ModelConfig
    from ptycho_torch.model import PtychoPINN
    from ptycho_torch.simulate import make_probe

    rows = []
    for batch in batch_sizes:
        for variant in dtypes:
            dtype, *options = variant.split("+")
            torch.manual_seed(0)
            model = PtychoPINN(ModelConfig(patch_size_px=64, n_channels=4, nphotons=1e9),
                               torch.from_numpy(make_probe(64))).to(device)
            x = torch.rand(batch, 4, 64, 64, device=device)
            if "nchw" in options:
                model.network = _Contiguous(model.network.to(memory_format=torch.contiguous_format))
            if "compile" in options:
                model.network = torch.compile(model.network)
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
            offsets = torch.randn(batch, 4, 2, device=device) * 3
            norm = torch.ones(batch, device=device)
            autocast = torch.autocast(device_type=device, dtype=torch.bfloat16,
                                      enabled=dtype == "bf16")
            times = []
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            warmup = 3 if "compile" in options else 2
            for step in range(n_steps + warmup):
                _sync(device)
                started = time.perf_counter()
                optimizer.zero_grad(set_to_none=True)
                with autocast:
                    out = model(x, offsets, norm)
                loss = model.loss(out)  # its tensors are float32 (physics runs outside autocast)
                loss.backward()
                optimizer.step()
                _sync(device)
                if step >= warmup:  # warm-up (and compilation) excluded
                    times.append(time.perf_counter() - started)
            median = statistics.median(times)
            rows.append({"batch": batch, "dtype": variant, "step_ms": 1e3 * median,
                         "groups_per_s": batch / median, "n_steps": n_steps,
                         "peak_device_mib": (torch.cuda.max_memory_allocated() / 2**20
                                             if device == "cuda" else None)})
    return rows


def bench_inference(device: str, sizes: list[int], repeats: int,
                    batch_size: int = 512) -> list[dict]:
    """Patterns/s of reconstruct() (forward + stitching), gridsize 1, N 64, raster scan, and
    its peak working memory: the rise of peak host RSS (and on CUDA of peak allocated device
    memory) over what was resident before the call, input scan and model included there.
    Streaming in batches keeps that rise flat apart from the stitching canvas, which grows
    with the scanned area (reported beside it)."""
    from ptycho_torch.config import ModelConfig
    from ptycho_torch.data import GroupedScan, ScanData
    from ptycho_torch.model import PtychoPINN
    from ptycho_torch.reassembly import canvas_frame
    from ptycho_torch.simulate import make_probe
    from ptycho_torch.workflows import predict_and_stitch

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
        times, host_peak, device_peak = [], None, None
        for rep in range(repeats):
            _sync(device)
            if rep == 0:  # memory from the first call; timing from all
                rss_before = _proc_status_kib("VmRSS")
                can_reset = _reset_host_peak()
                if device == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                    allocated_before = torch.cuda.memory_allocated()
            started = time.perf_counter()
            with torch.inference_mode():
                predict_and_stitch(model, grouped, shape, origin, device, batch_size, 20,
                            progress=False)
            _sync(device)
            times.append(time.perf_counter() - started)
            if rep == 0:
                if can_reset and rss_before is not None:
                    host_peak = (_proc_status_kib("VmHWM") - rss_before) / 1024
                if device == "cuda":
                    device_peak = (torch.cuda.max_memory_allocated() - allocated_before) / 2**20
        median = statistics.median(times)
        rows.append({"patterns": n, "seconds": median, "patterns_per_s": n / median,
                     "seconds_per_1k": 1e3 * median / n, "repeats": repeats,
                     "batch_size": batch_size, "input_mib": scan.diffraction.nbytes / 2**20,
                     "canvas_px": list(shape),
                     "canvas_mib": shape[0] * shape[1] * (8 + 4) / 2**20,
                     "peak_host_rise_mib": host_peak, "peak_device_rise_mib": device_peak})
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
    def mib(value):
        return "-" if value is None else f"{value:.0f}"

    lines = [f"# Benchmarks: {result['device_name']} ({result['date']})", "",
             f"torch {result['torch']}, mode {result['mode']}"]
    for row in result.get("train", []):
        if row is result["train"][0]:
            lines += ["", "## Training step (gridsize 2, N 64; median)", "",
                      "| batch | dtype | step ms | groups/s | peak device MiB |",
                      "|---|---|---|---|---|"]
        lines.append(f"| {row['batch']} | {row['dtype']} | {row['step_ms']:.1f} | "
                     f"{row['groups_per_s']:.1f} | {mib(row['peak_device_mib'])} |")
    for row in result.get("inference", []):
        if row is result["inference"][0]:
            lines += ["", "## Inference incl. stitching (gridsize 1, N 64, batch "
                      f"{row['batch_size']}; median)", "",
                      "Memory: rise of peak host RSS (and peak allocated device memory) "
                      "during the call over what was resident before it (input scan and "
                      "model already loaded); the stitching canvas (complex64 sum + float32 "
                      "weight) is part of the rise and grows with the scanned area.", "",
                      "| patterns | seconds | patterns/s | s per 1k | input MiB | canvas "
                      "MiB | peak host rise MiB | peak device rise MiB |",
                      "|---|---|---|---|---|---|---|---|"]
        lines.append(f"| {row['patterns']} | {row['seconds']:.2f} | "
                     f"{row['patterns_per_s']:.0f} | {row['seconds_per_1k']:.2f} | "
                     f"{row['input_mib']:.0f} | {row['canvas_mib']:.1f} | "
                     f"{mib(row['peak_host_rise_mib'])} | {mib(row['peak_device_rise_mib'])} |")
    if "overheads" not in result:
        return "\n".join([*lines, ""])
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
    parser.add_argument("--sections", default="train,inference,overheads",
                        help="comma list of the sections to run: train, inference, overheads "
                             "(default: all; a subset adds its names to the result files)")
    parser.add_argument("--inference-sizes", default=None,
                        help="comma list of scan sizes in patterns (default: 1024,4096 with "
                             "--quick, else 1024,4096,16384)")
    parser.add_argument("--train-variants", default="fp32,bf16",
                        help="comma list of training-step variants: fp32 or bf16, each "
                             "optionally +nchw (network in the contiguous layout instead of "
                             "channels-last) and/or +compile (torch.compile of the network), "
                             "e.g. fp32,fp32+nchw,bf16,bf16+compile (default: %(default)s)")
    parser.add_argument("--inference-batch-size", type=int, default=512,
                        help="patterns per inference batch (default: %(default)s)")
    args = parser.parse_args(argv)
    sections = [name.strip() for name in args.sections.split(",") if name.strip()]
    unknown = sorted(set(sections) - {"train", "inference", "overheads"})
    if unknown or not sections:
        parser.error(f"--sections: unknown {unknown or args.sections!r}; choose from train, "
                     "inference, overheads")
    if args.device == "cuda" and not torch.cuda.is_available():
        print("python -m bench: error: --device cuda but no CUDA device is visible",
              file=sys.stderr)
        return 2
    quick = args.quick
    device_name = torch.cuda.get_device_name(0) if args.device == "cuda" else \
        f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"
    variants = [v.strip() for v in args.train_variants.split(",") if v.strip()]
    for variant in variants:
        dtype, *options = variant.split("+")
        if dtype not in ("fp32", "bf16") or set(options) - {"nchw", "compile"}:
            parser.error(f"--train-variants: cannot read {variant!r}")
    sizes = ([int(v) for v in args.inference_sizes.split(",")] if args.inference_sizes else
             [1024, 4096] if quick else [1024, 4096, 16384])
    result = {
        "date": time.strftime("%Y-%m-%d"), "device": args.device, "device_name": device_name,
        "torch": torch.__version__, "mode": "quick" if quick else "full",
    }
    if "train" in sections:
        result["train"] = bench_train_steps(args.device, [4, 64] if quick else [4, 64, 256],
                                            variants, 5 if quick else 30)
    if "inference" in sections:
        result["inference"] = bench_inference(args.device, sizes, 2 if quick else 5,
                                              args.inference_batch_size)
    if "overheads" in sections:
        result["overheads"] = bench_overheads(args.device, 3 if quick else 5)
    markdown = to_markdown(result)
    print(markdown)
    RESULTS.mkdir(parents=True, exist_ok=True)
    subset = "" if len(sections) == 3 else "-" + "-".join(sections)
    stem = RESULTS / f"{result['date']}-{args.device}{'-quick' if quick else ''}{subset}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown)
    print(f"wrote {stem}.json and {stem}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
