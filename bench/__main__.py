"""python -m bench: speed and overhead figures, medians measured side by side in one run.

Sections: training step latency (baseline config and large batches, fp32 and bf16
autocast; bench/train_steps.py), inference throughput including stitching with its peak
memory (bench/inference_speed.py), patch-stats instrumentation overhead and tracking
overhead (whole train CLI processes: --logger none, --log-patch-stats limit 2, the default
MLflow + TensorBoard; bench/overheads.py). Prints tables; writes
bench/results/<date>-<device>.json and .md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from bench.common import device_name, results_dir, today, write_results
from bench.tables import to_markdown
from bench.train_steps import check_variant

SECTIONS = ("train", "inference", "overheads")


def build_parser() -> argparse.ArgumentParser:
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
                             "channels-last) and/or +compile (torch.compile of the network) "
                             "or +graphs (the same, mode reduce-overhead: CUDA graphs), "
                             "e.g. fp32,fp32+nchw,bf16,bf16+compile (default: %(default)s)")
    parser.add_argument("--inference-batch-size", type=int, default=512,
                        help="patterns per inference batch (default: %(default)s)")
    parser.add_argument("--out", default=None,
                        help="folder for the result files (default: bench/results of this "
                             "checkout)")
    return parser


def _comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def run_sections(args: argparse.Namespace, sections: list[str], variants: list[str]) -> dict:
    """The result dict: run facts and one entry per section run."""
    from bench.inference_speed import bench_inference
    from bench.overheads import bench_overheads
    from bench.train_steps import bench_train_steps

    quick = args.quick
    result = {"date": today(), "device": args.device, "device_name": device_name(args.device),
              "torch": torch.__version__, "mode": "quick" if quick else "full"}
    if "train" in sections:
        result["train"] = bench_train_steps(args.device, [4, 64] if quick else [4, 64, 256],
                                            variants, 5 if quick else 30)
    if "inference" in sections:
        sizes = ([int(v) for v in _comma_list(args.inference_sizes)] if args.inference_sizes
                 else [1024, 4096] if quick else [1024, 4096, 16384])
        result["inference"] = bench_inference(args.device, sizes, 2 if quick else 5,
                                              args.inference_batch_size)
    if "overheads" in sections:
        result["overheads"] = bench_overheads(args.device, 3 if quick else 5)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    sections = _comma_list(args.sections)
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown or not sections:
        parser.error(f"--sections: unknown {unknown or args.sections!r}; choose from "
                     f"{', '.join(SECTIONS)}")
    variants = _comma_list(args.train_variants)
    for variant in variants:
        try:
            check_variant(variant)
        except ValueError as exc:
            parser.error(f"--train-variants: {exc}")
    if args.device == "cuda" and not torch.cuda.is_available():
        print("python -m bench: error: --device cuda but no CUDA device is visible",
              file=sys.stderr)
        return 2
    result = run_sections(args, sections, variants)
    markdown = to_markdown(result)
    print(markdown)
    subset = "" if len(sections) == len(SECTIONS) else "-" + "-".join(sections)
    out = Path(args.out) if args.out else results_dir()
    stem = out / f"{result['date']}-{args.device}{'-quick' if args.quick else ''}{subset}"
    write_results(stem, result, markdown)
    print(f"wrote {stem}.json and {stem}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
