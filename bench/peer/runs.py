"""The peer comparison's runs: data, default model, our timed inference, pty-chi's timed
iterations, and :func:`compare`, which runs them all into one :class:`PeerReport`."""

from __future__ import annotations

import functools
import logging
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.common import device_name, timed, today
from bench.peer.convergence import (
    checkpoint_schedule,
    convergence,
    half_way,
    match_time,
    noise_floor_loss,
)
from bench.peer.ptychi import (
    METHODS,
    PtychiSettings,
    import_ptychi,
    ptychi_options,
    to_ptychi_inputs,
)
from bench.peer.record import (
    Checkpoint,
    DataInfo,
    Env,
    MethodResult,
    ModelInfo,
    OursResult,
    PeerReport,
    PtychiSection,
    Timing,
    build_target,
    build_verdict,
)

# Training used when --model-dir is not given: the project baseline's settings
# (python -m ptycho_torch.baseline): 10 epochs, 256 groups, gridsize 2, batch 4, Poisson.
DEFAULT_TRAIN = {"max_epochs": 10, "n_images": 256, "gridsize": 2, "batch_size": 4,
                 "torch-loss-mode": "poisson"}

logger = logging.getLogger("bench.peer")


@dataclass(frozen=True, kw_only=True)
class PeerSettings:
    """One comparison's choices: device, our inference's repeats and batch, each method's
    iterations, the convergence judgement, and how pty-chi runs."""

    device: str
    repeats: int
    inference_batch_size: int
    epie_iters: int
    lsqml_iters: int
    convergence_window: int
    convergence_tolerance: float
    ptychi: PtychiSettings


@dataclass(frozen=True)
class PtychiRun:
    """One pty-chi reconstruction: final object (H, W) complex64 in the objectGuess frame,
    loss per iteration, scored checkpoints, timed seconds (``build_s`` of them building)."""

    object: np.ndarray
    loss: list[float]
    checkpoints: list[Checkpoint]
    seconds: float
    build_s: float
    iterations: int


def ensure_data(data_dir: Path, seed: int) -> None:
    """Simulate train.npz / test.npz with the default settings when either is missing."""
    if (data_dir / "train.npz").is_file() and (data_dir / "test.npz").is_file():
        return
    from ptycho_torch.simulate import simulate_scan, write_scans

    logger.info("simulating the default scan into %s (seed %d)", data_dir, seed)
    write_scans(data_dir, simulate_scan(seed=seed))


def train_default_model(data_dir: Path, train_dir: Path, device: str, seed: int,
                        epochs: int, threads: int) -> tuple[list[str], float]:
    """Train with the baseline's settings (DEFAULT_TRAIN) by the train CLI, so the report
    can name the command; returns the command and its seconds."""
    command = [sys.executable, "-m", "ptycho_torch.train", "--train_data_file",
               str(data_dir / "train.npz"), "--output_dir", str(train_dir),
               "--max_epochs", str(epochs), "--n_images", str(DEFAULT_TRAIN["n_images"]),
               "--gridsize", str(DEFAULT_TRAIN["gridsize"]),
               "--batch_size", str(DEFAULT_TRAIN["batch_size"]),
               "--torch-loss-mode", DEFAULT_TRAIN["torch-loss-mode"], "--deterministic",
               "--seed", str(seed), "--accelerator", device, "--logger", "none", "--quiet"]
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    logger.info("training the default model: %s", " ".join(command[1:]))
    started = time.perf_counter()
    subprocess.run(command, check=True, env=env)
    return command, time.perf_counter() - started


def run_ours(model_dir: Path, scan, device: str, batch_size: int,
             repeats: int) -> tuple[OursResult, np.ndarray, np.ndarray]:
    """Our inference on every group of the scan, timed: grouping + forward passes + stitching
    on the device, from the loaded scan arrays to the stitched object on the host; the model
    is loaded (and on the device) beforehand and one untimed warm-up run precedes the
    timed repeats. Returns the result (scored against objectGuess), the object and its
    coverage weight."""
    from ptycho_torch.reassembly import canvas_frame, default_crop
    from ptycho_torch.workflows import evaluate, group_scan, load_model, predict_and_stitch

    model, config = load_model(model_dir, device)
    n = config.model.patch_size_px
    crop = default_crop(n)

    def once():
        grouped = group_scan(scan, config)
        positions = grouped.positions.reshape(-1, 2).numpy()
        shape, origin = canvas_frame(positions, n, scan.object_guess.shape)
        obj, weight = predict_and_stitch(model, grouped, shape, origin, device, batch_size,
                                         crop, progress=False)
        return obj, weight, len(grouped), positions.shape[0]

    once()  # warm-up: allocator, kernels, caches
    seconds = []
    for _ in range(repeats):
        (obj, weight, n_groups, n_patterns), elapsed = timed(device, once)
        seconds.append(elapsed)
    result = OursResult(crop=crop, seconds=seconds, median_s=float(np.median(seconds)),
                        n_groups=n_groups, n_patterns=n_patterns,
                        gridsize=config.data.gridsize,
                        n_filters_scale=config.model.n_filters_scale,
                        metrics=evaluate(obj, weight, scan.object_guess, crop))
    return result, obj, weight


def _iterate(task, method: str, iterations: int, settings: PtychiSettings, score,
             elapsed: float) -> tuple[np.ndarray, list[Checkpoint]]:
    """Run ``task`` to ``iterations`` in chunks, scoring the object after each (untimed)."""
    checkpoints, done = [], 0
    for stop in checkpoint_schedule(iterations, settings.checkpoint_every):
        elapsed += timed(settings.device, functools.partial(task.run, n_epochs=stop - done))[1]
        done = stop
        obj = task.get_data_to_cpu("object", as_numpy=True)[0]
        metrics = score(obj)
        checkpoints.append(Checkpoint(iteration=done, seconds=elapsed, metrics=metrics))
        logger.info("%s: %d/%d iterations, %.1f s, amp SSIM %.4f, phase SSIM %.4f",
                    method, done, iterations, elapsed, metrics["amp_ssim"],
                    metrics["phase_ssim"])
    return obj, checkpoints


def run_ptychi(method: str, inputs: dict, iterations: int, settings: PtychiSettings,
               score) -> PtychiRun:
    """Run one pty-chi reconstruction in chunks, scored after each (checkpoint_schedule).

    Timed: building the task (data to the device) and the iterations, each chunk
    synchronized; not timed: fetching and scoring the object at each checkpoint.
    ``score(obj)`` -> metrics dict. pty-chi's global torch defaults are restored after.
    """
    import torch

    api, PtychographyTask = import_ptychi()
    saved_dtype, saved_device = torch.get_default_dtype(), torch.get_default_device()
    options = ptychi_options(api, method, iterations, settings)
    try:
        task, build_s = timed(settings.device,
                              functools.partial(PtychographyTask, options, **inputs["arrays"]))
        obj, checkpoints = _iterate(task, method, iterations, settings, score, build_s)
        loss = task.reconstructor.loss_tracker.table["loss"].to_numpy(dtype=np.float64)
        with task:  # its __exit__ frees pty-chi's buffers
            pass
    finally:
        torch.set_default_dtype(saved_dtype)
        torch.set_default_device(saved_device)
    return PtychiRun(object=obj, loss=loss.tolist(), checkpoints=checkpoints,
                     seconds=checkpoints[-1].seconds, build_s=build_s, iterations=iterations)


def judge(run: PtychiRun, floor: float, settings: PeerSettings) -> MethodResult:
    """A pty-chi run as the report keeps it: final metrics, convergence, half-way SSIM."""
    return MethodResult(
        loss=run.loss, checkpoints=run.checkpoints, seconds=run.seconds, build_s=run.build_s,
        iterations=run.iterations, metrics=run.checkpoints[-1].metrics,
        convergence=convergence(run.loss, floor, settings.convergence_window,
                                settings.convergence_tolerance),
        half_way=half_way(run.checkpoints, run.iterations))


def describe_scan(scan) -> DataInfo:
    meta = scan.metadata
    return DataInfo(test=str(scan.path), n_patterns=scan.n_patterns, patch_size=scan.patch_size,
                    nphotons=meta.get("nphotons", float("nan")), overlap=meta.get("overlap"),
                    object_shape=list(scan.object_guess.shape), metadata=meta)


def describe_env(device: str) -> Env:
    import importlib.metadata

    import torch

    return Env(torch=torch.__version__, ptychi=importlib.metadata.version("ptychi"),
               threads=torch.get_num_threads(), machine=device_name(device),
               python=platform.python_version())


def compare(scan, model: ModelInfo, settings: PeerSettings,
            command: str) -> tuple[PeerReport, dict[str, np.ndarray]]:
    """Ours and each pty-chi method on ``scan`` (with objectGuess), all scored on the region
    our stitched patches cover; returns the report and each reconstruction by name."""
    from ptycho_torch.reassembly import covered_box
    from ptycho_torch.workflows import evaluate

    device, gt = settings.device, scan.object_guess
    logger.info("our inference on %s (%s), %d timed repeats", scan.path, device,
                settings.repeats)
    ours, obj, weight = run_ours(Path(model.dir), scan, device, settings.inference_batch_size,
                                 settings.repeats)
    rows, cols = covered_box(weight, border=ours.crop // 2)
    inputs = to_ptychi_inputs(scan.diffraction, scan.probe, scan.x, scan.y, gt.shape)
    floor = noise_floor_loss(scan)
    methods, objects = {}, {"ours": obj}
    for method, iterations in zip(METHODS, (settings.epie_iters, settings.lsqml_iters),
                                  strict=True):
        logger.info("pty-chi %s: %d iterations on %s", method, iterations, device)
        run = run_ptychi(method, inputs, iterations, settings.ptychi,
                         lambda o: evaluate(o, weight, gt, ours.crop))
        methods[method], objects[f"pty-chi {method}"] = judge(run, floor, settings), run.object
    targets = {name: build_target(r, ours, match_time(r.checkpoints, ours.metrics))
               for name, r in methods.items()}
    ptychi = PtychiSection(batch_size=settings.ptychi.batch_size,
                           epie_alpha=settings.ptychi.epie_alpha,
                           lsqml_noise=settings.ptychi.lsqml_noise,
                           convergence_window=settings.convergence_window,
                           convergence_tolerance=settings.convergence_tolerance, methods=methods)
    report = PeerReport(date=today(), device=device, command=command, data=describe_scan(scan),
                        model=model, scored_box=[[rows.start, rows.stop], [cols.start, cols.stop]],
                        timing=Timing(), ours=ours, noise_floor_loss=floor, ptychi=ptychi,
                        targets=targets, verdict=build_verdict(targets, device),
                        env=describe_env(device))
    return report, objects
