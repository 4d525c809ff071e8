"""python -m ptycho_torch.inference: reconstruct a scan with a trained model.

Writes the stitched complex object (reconstruction.npz), amplitude/phase PNGs (ground truth
beside them when the scan has one) and metrics.json (when it has objectGuess).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ptycho_torch.cli.shared import (
    UsageError,
    add_execution_args,
    build_execution_config_from_args,
    configure_logging,
    positive_int,
    resolve_device,
    run_cli,
)
from ptycho_torch.config import STITCH_WEIGHTS, RunConfig, flatten
from ptycho_torch.config_factory import build_inference_config
from ptycho_torch.data import GroupedScan, ScanData, build_grouped_scan, load_scan
from ptycho_torch.io import atomic_savefig, atomic_savez, atomic_write_json, record_provenance
from ptycho_torch.metrics import compute_metrics, global_phase_aligned
from ptycho_torch.model import PtychoPINN
from ptycho_torch.reassembly import Stitcher, canvas_frame, covered_box, default_crop, probe_weight
from tracking.loggers import SIDECAR_FILE, TrackedRun, command_line

logger = logging.getLogger("ptycho_torch.inference")  # not "__main__" under python -m

MODEL_FILE = "model.pt"
CONFIG_FILE = "config.json"


def load_model(model_dir: str | Path, device: str = "cpu") -> tuple[PtychoPINN, RunConfig]:
    """Trained PtychoPINN (eval mode, on device) and its RunConfig from a training folder.
    A missing, damaged or foreign folder is a UsageError naming the file."""
    model_dir = Path(model_dir)
    if not model_dir.exists():
        raise UsageError(f"--model_path {model_dir} does not exist (a training output folder "
                         "expected)")
    if not model_dir.is_dir():
        raise UsageError(f"--model_path {model_dir} is a file; pass the training output "
                         "folder that holds it")
    for name in (MODEL_FILE, CONFIG_FILE):
        if not (model_dir / name).is_file():
            raise UsageError(f"{model_dir}: holds no {name}; --model_path must be a training "
                             "output folder (model.pt and config.json)")
    try:
        config = RunConfig.load(model_dir / CONFIG_FILE)
    except (ValueError, KeyError, TypeError) as exc:  # JSONDecodeError is a ValueError
        raise UsageError(f"{model_dir / CONFIG_FILE}: not a readable training config "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0]})") from exc
    try:
        state = torch.load(model_dir / MODEL_FILE, map_location="cpu", weights_only=True)
        n = config.model.patch_size_px
        model = PtychoPINN(config.model, torch.ones(n, n, dtype=torch.complex64))
        model.load_state_dict(state)
    except Exception as exc:  # noqa: BLE001 - damaged zip, refused pickle, wrong tensors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise UsageError(f"{model_dir / MODEL_FILE}: not readable weights for its config.json "
                         f"({type(exc).__name__}: {first[:200]})") from exc
    return model.to(device).eval(), config


def check_scan_for_model(scan: ScanData, config: RunConfig,
                         n_images: int | None = None) -> GroupedScan:
    """The scan's groups for this model; a scan the model cannot take is a UsageError or
    DataContractError (before anything is written)."""
    n = config.model.patch_size_px
    if scan.patch_size != n:
        raise UsageError(f"{scan.path}: patterns are {scan.patch_size} px but the model was "
                         f"trained on {n} px")
    return build_grouped_scan(scan, dataclasses.replace(config.data, n_groups=n_images))


@torch.inference_mode()
def reconstruct(model: PtychoPINN, grouped: GroupedScan, shape: tuple[int, int],
                origin_xy: np.ndarray, device: str, batch_size: int, crop: int,
                progress: bool = True, on_batch=None, recorder=None,
                stitch_weight: str = "crop") -> tuple[np.ndarray, np.ndarray]:
    """Run the model over every group and stitch on the device, batch by batch.

    Returns the stitched object (H, W) complex64 and its coverage weight (H, W) float32.
    ``on_batch(batch_idx, batch, out)`` sees each batch's inputs and outputs; a patch-stats
    ``recorder`` is armed for its first batches only (forward and stitching instrumented).
    ``stitch_weight``: "crop" (the reference: central crops, plain average) or "probe"
    (whole patches weighted by the model's normalized probe intensity).
    """
    if stitch_weight not in STITCH_WEIGHTS:
        raise ValueError(f"stitch weight must be one of {STITCH_WEIGHTS}, got {stitch_weight!r}")
    weight = probe_weight(model.physics.probe) if stitch_weight == "probe" else None
    stitcher = Stitcher(shape, origin_xy, crop, device, patch_weight=weight)
    loader = torch.utils.data.DataLoader(grouped, batch_size=batch_size, shuffle=False)
    from tqdm.auto import tqdm

    for batch_idx, batch in enumerate(tqdm(loader, desc="inference", disable=not progress,
                                           unit="batch")):
        batch = {key: value.to(device, non_blocking=True) for key, value in batch.items()}
        armed = recorder is not None and recorder.wants("inference")
        if armed:
            recorder.begin("inference", batch_idx)
            model.patch_stats = recorder
        out = model(batch["diffraction"], batch["offsets"], batch["norm_factor"])
        obj = out["object"]
        crops = stitcher.add(obj.reshape(-1, *obj.shape[-2:]), batch["positions"].reshape(-1, 2))
        if armed:
            recorder.observe("stitch_crop_amplitude", crops.abs())
            model.patch_stats = None
            recorder.end()
        if on_batch is not None:
            on_batch(batch_idx, batch, out)
    return stitcher.result()


def save_reconstruction_png(path: Path, obj: np.ndarray, gt: np.ndarray | None,
                            title: str) -> None:
    """Amplitude and phase side by side, ground truth beneath when there is one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [("reconstruction", obj)] + ([("ground truth", gt)] if gt is not None else [])
    # with a truth, both phase panels share its colour range, so colours compare directly
    # (amplitude keeps its own: its absolute scale is the model's gain, not physics)
    phase_range = {}
    if gt is not None:
        covered = np.angle(gt)[np.abs(gt) > 0]
        if covered.size:
            phase_range = {"vmin": float(covered.min()), "vmax": float(covered.max())}
    fig, axes = plt.subplots(len(rows), 2, figsize=(10, 4.2 * len(rows)), squeeze=False)
    for (label, img), (ax_a, ax_p) in zip(rows, axes, strict=True):
        for ax, data, name, cmap, limits in (
                (ax_a, np.abs(img), "amplitude", "gray", {}),
                (ax_p, np.angle(img), "phase (rad)", "twilight", phase_range)):
            im = ax.imshow(data, cmap=cmap, **limits)
            ax.set_title(f"{label}: {name}")
            ax.set_xlabel("x (px)")
            ax.set_ylabel("y (px)")
            fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(title)
    fig.tight_layout()
    atomic_savefig(path, fig, dpi=110)
    plt.close(fig)


def evaluate(obj: np.ndarray, weight: np.ndarray, gt: np.ndarray, crop: int) -> dict:
    """Metrics on the covered region of the object frame, trimmed by half a crop."""
    rows, cols = covered_box(weight, border=crop // 2)
    return compute_metrics(obj[rows, cols], gt[rows, cols])


def run_inference(model_dir: str | Path, scan: ScanData, output_dir: str | Path,
                  n_images: int | None = None, device: str = "cpu",
                  batch_size: int = 256, crop: int | None = None, progress: bool = True,
                  model: PtychoPINN | None = None, config: RunConfig | None = None,
                  recorder=None, debug_dir: str | Path | None = None,
                  grouped: GroupedScan | None = None, stitch_weight: str = "crop") -> dict:
    """Reconstruct ``scan`` and write reconstruction.npz, PNGs and metrics.json; with
    ``debug_dir`` also the forward-parity debug dump, with ``recorder`` patch stats.
    ``grouped``: the scan's groups from :func:`check_scan_for_model`, if already built."""
    output_dir = Path(output_dir)
    if model is None:
        model, config = load_model(model_dir, device)
    n = config.model.patch_size_px
    if grouped is None:
        grouped = check_scan_for_model(scan, config, n_images)
    crop = crop or default_crop(n)
    object_shape = scan.object_guess.shape if scan.object_guess is not None else None
    positions = grouped.positions.reshape(-1, 2).numpy()
    shape, origin = canvas_frame(positions, n, object_shape)
    dump = None
    if debug_dir is not None:
        from ptycho_torch.debug_dump import DebugDump

        dump = DebugDump(debug_dir)
    started = time.perf_counter()
    obj, weight = reconstruct(model, grouped, shape, origin, device, batch_size, crop,
                              progress, dump.on_batch if dump else None, recorder,
                              stitch_weight)
    seconds = time.perf_counter() - started
    output_dir.mkdir(parents=True, exist_ok=True)
    atomic_savez(output_dir / "reconstruction.npz", object=obj, amplitude=np.abs(obj),
                 phase=np.angle(obj), weight=weight, origin_xy=origin)
    result = {"n_groups": len(grouped), "n_patterns": int(positions.shape[0]),
              "seconds": seconds, "device": device, "output_dir": str(output_dir)}
    metrics = None
    if scan.object_guess is not None:
        metrics = evaluate(obj, weight, scan.object_guess, crop)
        atomic_write_json(output_dir / "metrics.json", metrics)
        result["metrics"] = metrics
    title = f"{scan.path.name}: {len(grouped)} groups"
    if metrics:
        title += (f" | amp SSIM {metrics['amp_ssim']:.3f}, "
                  f"phase SSIM {metrics['phase_ssim']:.3f}")
    gt = None
    if scan.object_guess is not None:
        gt = np.where(weight > 0, scan.object_guess, 0)
    shown = obj
    if gt is not None:
        shown = global_phase_aligned(obj, gt)
        title += "\n(constant phase offset to the truth removed for display)"
    save_reconstruction_png(output_dir / "reconstruction.png", shown, gt, title)
    if dump is not None:
        result["debug_files"] = [str(p) for p in dump.write(obj, weight, n, output_dir)]
    logger.info("reconstructed %d patterns in %.2f s on %s -> %s", result["n_patterns"], seconds,
                device, output_dir)
    if metrics:
        logger.info("metrics: %s", ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ptycho_torch.inference",
        description="Reconstruct a scan with a trained PtychoPINN; stitch, save, score.")
    parser.add_argument("--model_path", "--model-path", required=True,
                        help="training output folder (holds model.pt and config.json)")
    parser.add_argument("--test_data", "--test-data", required=True,
                        help="NPZ scan to reconstruct (data contract in DESIGN.md)")
    parser.add_argument("--output_dir", "--output-dir", required=True,
                        help="folder for reconstruction.npz, reconstruction.png, metrics.json")
    parser.add_argument("--n_images", "--n-images", type=positive_int, default=None,
                        help="groups to reconstruct (default: one per scan point)")
    parser.add_argument("--inference-batch-size", "--inference_batch_size", type=positive_int,
                        default=256, help="groups per forward pass; memory stays flat as the "
                                          "scan grows (default: %(default)s)")
    parser.add_argument("--stitch-crop", type=positive_int, default=None,
                        help="central crop of each patch used in stitching, px "
                             "(default: 20 at N = 64); with --stitch-weight probe it "
                             "still sets the region scored and shown")
    parser.add_argument("--stitch-weight", choices=STITCH_WEIGHTS, default="crop",
                        help="how overlapping patches are averaged: 'crop' (the reference: "
                             "central crops, plain average) or 'probe' (whole patches "
                             "weighted by the probe intensity |P|^2, where each one is best "
                             "determined) (default: %(default)s)")
    parser.add_argument("--debug-dump", default=None,
                        help="folder for the forward-parity debug dump (patch grid, offsets, "
                             "stats, canvas)")
    add_execution_args(parser, "inference")
    return parser


def cli_main(argv: list[str] | None = None) -> int:
    """Entry point; reads sys.argv when argv is None; returns 0 on success, 2 on bad input."""
    args = build_parser().parse_args(argv)
    prog = "python -m ptycho_torch.inference"

    def main() -> int:
        execution = build_execution_config_from_args(args, "inference")
        configure_logging(execution.quiet)
        device = resolve_device(execution.accelerator)
        model, config = load_model(args.model_path, device)
        scan = load_scan(args.test_data)
        grouped = check_scan_for_model(scan, config, args.n_images)  # before anything exists
        out = Path(args.output_dir)
        for flag, folder in (("--output_dir", out), ("--debug-dump", args.debug_dump)):
            if folder is not None and Path(folder).exists() and not Path(folder).is_dir():
                raise UsageError(f"{flag} {folder} exists and is not a directory")
        command = command_line(prog, argv)
        with TrackedRun(execution.loggers, "inference", out, command, execution.tracking_uri,
                        execution.experiment_name, execution.run_name, device,
                        execution.seed, tags=_training_link(args.model_path)) as run:
            inference_outputs(run, args, execution, model, config, scan, out, device, command,
                              grouped)
        return 0

    return run_cli(main, prog)


def _training_link(model_dir: str | Path) -> dict[str, str]:
    """Tags linking an inference run to the training run that made its model."""
    tags = {"model_path": str(Path(model_dir).resolve())}
    sidecar = Path(model_dir) / SIDECAR_FILE
    if sidecar.is_file():
        tags["train_run_id"] = json.loads(sidecar.read_text()).get("run_id", "")
    return tags


def inference_outputs(run: TrackedRun, args: argparse.Namespace, execution, model, config,
                      scan: ScanData, out: Path, device: str, command: list[str],
                      grouped: GroupedScan | None = None) -> dict:
    """Reconstruct inside a tracked run; log params, dataset, metrics and artifacts."""
    recorder = None
    if execution.log_patch_stats:
        from tracking.patch_stats import PatchStatsRecorder

        extra = (Path(args.debug_dump),) if args.debug_dump else ()
        recorder = PatchStatsRecorder(execution.patch_stats_limit,
                                      execution.patch_stats_dir or out / "analysis", extra)
        recorder.listeners.append(run.log_patch_record)
    inference_config = build_inference_config(args)
    run.log_params({**flatten({"model": config.model.__dict__, "data": config.data.__dict__,
                               "inference": inference_config.__dict__}),
                    "inference.n_images": args.n_images, "device": device,
                    "model_path": str(args.model_path)})
    run.log_dataset(scan.path, "inference")
    result = run_inference(args.model_path, scan, out, args.n_images, device,
                           inference_config.inference_batch_size,
                           inference_config.stitch_crop_px,
                           progress=not execution.quiet, model=model, config=config,
                           recorder=recorder, debug_dir=args.debug_dump, grouped=grouped,
                           stitch_weight=inference_config.stitch_weight)
    run.log_metrics({"inference/seconds": result["seconds"],
                     "inference/patterns_per_s": result["n_patterns"] / max(result["seconds"],
                                                                            1e-9)})
    if "metrics" in result:
        run.log_metrics(result["metrics"])
    run.write_sidecar(out)
    produced = [out / name for name in ("reconstruction.npz", "reconstruction.png",
                                        "metrics.json", SIDECAR_FILE)]
    for path in produced:
        run.log_artifact(path)
    run.log_images([out / "reconstruction.png"])
    record_provenance(out, command, produced)
    if recorder is not None:
        run.publish_patch_stats(recorder, command)
    if args.debug_dump:
        debug_files = [Path(p) for p in result.get("debug_files", [])]
        record_provenance(args.debug_dump, command, debug_files)
        if recorder is not None:
            debug_files += [p for p in recorder.paths if p.parent == Path(args.debug_dump)]
        for path in debug_files:
            run.log_artifact(path, "forward_parity_debug")
    return result


if __name__ == "__main__":
    sys.exit(cli_main())
