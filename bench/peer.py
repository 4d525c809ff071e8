"""python -m bench.peer: reconstruction quality and speed against an iterative peer (pty-chi).

On one simulated test scan (test.npz of ``python -m ptycho_torch.simulate``) this compares our
trained model's stitched reconstruction with pty-chi's ePIE and LSQML run to convergence:
amplitude and phase SSIM, PSNR and FRC50 against the ground truth ``objectGuess``, and the
wall time to the reconstruction. Both sides get the same diffraction data, probe, positions
and photons; pty-chi's probe and positions are fixed (our model uses the known probe too),
its object starts at ones. Every reconstruction is scored by ``ptycho_torch.metrics`` on the
region our inference scores (``ptycho_torch.inference.evaluate``: the box our stitched
patches cover, trimmed by half a stitch crop), after the same phase-plane and amplitude-scale
alignment.

Writes ``<out>/<date>-<device>-peer.json``, ``.md``, ``.png`` (ground truth, ours, ePIE,
LSQML amplitude and phase) and ``-peer-convergence.png`` (data-fit loss per iteration, SSIM
against pty-chi's wall time). pty-chi is an extra of the bench only:
``pip install -e '.[bench]'``.

Conventions matched (see :func:`to_ptychi_inputs`):

- data: our files hold amplitudes with the zero frequency centred (``fftshift`` after an
  orthonormal FFT); pty-chi wants intensities, and its forward model does not shift, so we
  square and ``ifftshift`` them and set ``fft_shift=False``.
- positions: ours are patch centres with patch index N/2 on the position (patch pixel (i, j)
  is object pixel (y - N/2 + i, x - N/2 + j)); pty-chi puts patch pixel (i, j) at
  (p_y + o_y - (N-1)/2 + i, ...) for positions p and origin o. With o = (-1/2, -1/2),
  p = our (y, x) exactly, so pty-chi's object array is the objectGuess frame pixel for pixel.
- probe: pty-chi's FFT is unnormalized (ours orthonormal) and its probe is not normalized, so
  the known probe is scaled once so that its far-field power through an object of ones equals
  the data's mean counts per pattern (no ground truth used); the object absorbs the rest of
  the global scale, which the metrics' amplitude-scale alignment removes.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
PTYCHI_MISSING = "pty-chi is not installed: pip install -e '.[bench]'"
# pty-chi's position origin: patch pixel (i, j) sits at p + origin - (N-1)/2 + (i, j), so
# origin -1/2 makes pty-chi positions equal to our patch centres (index N/2 on the position).
PTYCHI_ORIGIN_YX = (-0.5, -0.5)
METHODS = ("ePIE", "LSQML")
# Training used when --model-dir is not given: the project baseline's settings
# (python -m ptycho_torch.baseline): 10 epochs, 256 groups, gridsize 2, batch 4, Poisson.
DEFAULT_TRAIN = {"max_epochs": 10, "n_images": 256, "gridsize": 2, "batch_size": 4,
                 "torch-loss-mode": "poisson"}

logger = logging.getLogger("bench.peer")


class PtychiMissing(RuntimeError):
    """pty-chi (the bench extra) cannot be imported."""


def import_ptychi():
    """(ptychi.api, PtychographyTask), imported lazily; PtychiMissing when not installed."""
    try:
        import ptychi.api as api
        from ptychi.api.task import PtychographyTask
    except ImportError as exc:
        raise PtychiMissing(PTYCHI_MISSING) from exc
    return api, PtychographyTask


# --------------------------------------------------------------------------------------
# Our scan -> pty-chi's inputs (pure functions, tested without pty-chi)
# --------------------------------------------------------------------------------------

def ptychi_intensities(diffraction: np.ndarray) -> np.ndarray:
    """(n, N, N) measured amplitudes, zero frequency centred -> (n, N, N) float32 intensities
    with the zero frequency at [0, 0], as pty-chi's unshifted FFT predicts them
    (use with ``data_options.fft_shift = False``)."""
    intensity = np.square(np.asarray(diffraction, dtype=np.float64))
    return np.fft.ifftshift(intensity, axes=(-2, -1)).astype(np.float32)


def ptychi_positions(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                             tuple[float, float]]:
    """Our patch centres (x, y) in object pixels -> pty-chi (position_y_px, position_x_px,
    origin (y, x)) for ``determine_position_origin_coords_by = SPECIFIED``; covers the same
    object pixels (see PTYCHI_ORIGIN_YX)."""
    return (np.asarray(y, dtype=np.float64).copy(), np.asarray(x, dtype=np.float64).copy(),
            PTYCHI_ORIGIN_YX)


def ptychi_patch_corner(pos_y: np.ndarray, pos_x: np.ndarray, origin_yx: tuple[float, float],
                        n: int) -> np.ndarray:
    """(P, 2) object pixel (row, col) of patch pixel (0, 0) in pty-chi's convention:
    position + origin - (N - 1) / 2 (ptychi.image_proc.extract_patches_*)."""
    return np.stack([pos_y + origin_yx[0], pos_x + origin_yx[1]], axis=1) - (n - 1) / 2


def ptychi_probe(probe: np.ndarray, intensities: np.ndarray) -> np.ndarray:
    """(N, N) known probe -> (1, 1, N, N) complex64 for pty-chi, scaled so that
    sum |FFT(probe * 1)|^2 (pty-chi's unnormalized FFT) equals the mean counts per pattern."""
    n = probe.shape[-1]
    power = float(np.sum(np.abs(probe.astype(np.complex128)) ** 2)) * n * n
    mean_counts = float(np.mean(np.sum(intensities.astype(np.float64), axis=(-2, -1))))
    scale = math.sqrt(mean_counts / power)
    return (probe * scale).astype(np.complex64)[None, None]


def to_ptychi_inputs(diffraction: np.ndarray, probe: np.ndarray, x: np.ndarray, y: np.ndarray,
                     object_shape: tuple[int, int]) -> dict:
    """Everything pty-chi's PtychographyTask needs, from our scan arrays: keyword arrays
    (diffraction_data, probe_data, probe_position_x_px, probe_position_y_px, object_data:
    ones of the objectGuess frame) and the position origin."""
    intensities = ptychi_intensities(diffraction)
    pos_y, pos_x, origin = ptychi_positions(x, y)
    return {
        "arrays": {
            "diffraction_data": intensities,
            "probe_data": ptychi_probe(probe, intensities),
            "probe_position_x_px": pos_x,
            "probe_position_y_px": pos_y,
            "object_data": np.ones((1, *object_shape), dtype=np.complex64),
        },
        "origin_yx": origin,
    }


def noise_floor_loss(scan) -> float:
    """Diagnostic: pty-chi's displayed loss (mean (sqrt(I_pred) - sqrt(I_meas))^2 per pixel)
    of the TRUE object through the simulator's own forward model, best global scale: the
    data fit a perfect reconstruction reaches on this noisy data. Uses the ground truth, so
    it judges convergence only; no reconstruction sees it."""
    import torch

    from ptycho_torch import physics

    centres = torch.from_numpy(np.stack([scan.x, scan.y], axis=1))
    patches = physics.extract_patches(torch.from_numpy(scan.object_guess), centres,
                                      scan.patch_size)
    model = physics.far_field_intensity(patches * torch.from_numpy(scan.probe))
    model = model.double().numpy()
    measured = scan.diffraction.astype(np.float64) ** 2
    a, b = np.sqrt(model), np.sqrt(measured)
    scale2 = (np.sum(a * b) / np.sum(a * a)) ** 2
    eps = 1e-7  # ptychi.metrics.MSELossOfSqrt
    return float(np.mean((np.sqrt(scale2 * model + eps) - np.sqrt(measured + eps)) ** 2))


# --------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------

def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def ensure_data(data_dir: Path, seed: int) -> None:
    """Simulate train.npz / test.npz with the default settings when either is missing."""
    if (data_dir / "train.npz").is_file() and (data_dir / "test.npz").is_file():
        return
    from ptycho_torch import simulate

    logger.info("simulating the default scan into %s (seed %d)", data_dir, seed)
    if simulate.cli_main(["--output-dir", str(data_dir), "--seed", str(seed)]) != 0:
        raise RuntimeError(f"simulation into {data_dir} failed")


def train_default_model(data_dir: Path, train_dir: Path, device: str, seed: int,
                        epochs: int, threads: int) -> tuple[list[str], float]:
    """Train with the baseline's settings (DEFAULT_TRAIN); returns the command and seconds."""
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


def run_ours(model_dir: Path, scan, device: str, batch_size: int, repeats: int) -> dict:
    """Our inference on every group of the scan, timed: grouping + forward passes + stitching
    on the device, from the loaded scan arrays to the stitched object on the host; the model
    is loaded (and on the device) beforehand and one untimed warm-up run precedes the
    timed repeats. Returns the object, coverage weight, stitch crop and timings."""
    from ptycho_torch.data import build_grouped_scan
    from ptycho_torch.reassembly import canvas_frame, default_crop
    from ptycho_torch.workflows import load_model, predict_and_stitch

    model, config = load_model(model_dir, device)
    n = config.model.patch_size_px
    if scan.patch_size != n:
        raise ValueError(f"{scan.path}: patterns are {scan.patch_size} px but the model was "
                         f"trained on {n} px")
    crop = default_crop(n)
    data_cfg = dataclasses.replace(config.data, n_groups=None)

    def once():
        grouped = build_grouped_scan(scan, data_cfg)
        positions = grouped.positions.reshape(-1, 2).numpy()
        shape, origin = canvas_frame(positions, n, scan.object_guess.shape)
        obj, weight = predict_and_stitch(model, grouped, shape, origin, device, batch_size,
                                         crop, progress=False)
        return obj, weight, len(grouped), positions.shape[0]

    once()  # warm-up: allocator, kernels, caches
    seconds = []
    for _ in range(repeats):
        _sync(device)
        started = time.perf_counter()
        obj, weight, n_groups, n_patterns = once()
        _sync(device)
        seconds.append(time.perf_counter() - started)
    return {"object": obj, "weight": weight, "crop": crop, "seconds": seconds,
            "median_s": statistics.median(seconds), "n_groups": n_groups,
            "n_patterns": n_patterns, "gridsize": config.data.gridsize,
            "n_filters_scale": config.model.n_filters_scale}


def ptychi_options(api, method: str, iterations: int, batch_size: int, device: str,
                   seed: int, epie_alpha: float, lsqml_noise: str):
    """pty-chi options: fixed probe and positions, object from ones, given iterations."""
    if method == "ePIE":
        options = api.EPIEOptions()
        options.object_options.alpha = epie_alpha
    else:
        options = api.LSQMLOptions()
        options.reconstructor_options.noise_model = api.NoiseModels[lsqml_noise.upper()]
        # the probe is known and fixed: no first-epoch probe-intensity rescaling
        options.reconstructor_options.rescale_probe_intensity_in_first_epoch = False
    rec = options.reconstructor_options
    rec.num_epochs = iterations
    rec.batch_size = batch_size
    rec.random_seed = seed
    rec.default_device = api.Devices.GPU if device == "cuda" else api.Devices.CPU
    options.data_options.fft_shift = False  # ptychi_intensities already put DC at [0, 0]
    obj = options.object_options
    obj.optimizable = True
    obj.determine_position_origin_coords_by = api.ObjectPosOriginCoordsMethods.SPECIFIED
    obj.position_origin_coords = np.array(PTYCHI_ORIGIN_YX)
    # it would rescale the (fixed) probe every 10 epochs: off, the probe stays the known one
    obj.remove_object_probe_ambiguity.enabled = False
    options.probe_options.optimizable = False
    options.probe_position_options.optimizable = False
    return options


def checkpoint_schedule(iterations: int, every: int) -> list[int]:
    """Iterations after which pty-chi's object is scored: 1, 2, 5 (the early rise), then
    every ``every`` and the last."""
    stops = {1, 2, 5, iterations, *range(every, iterations + 1, every)}
    return sorted(i for i in stops if 1 <= i <= iterations)


def run_ptychi(method: str, inputs: dict, iterations: int, batch_size: int, device: str,
               seed: int, epie_alpha: float, lsqml_noise: str, checkpoint_every: int,
               score) -> dict:
    """Run one pty-chi reconstruction in chunks, scored after each (checkpoint_schedule).

    Timed: building the task (data to the device) and the iterations, each chunk
    synchronized; not timed: fetching and scoring the object at each checkpoint.
    ``score(obj)`` -> metrics dict. Returns the final object, loss per iteration,
    checkpoints [{iteration, seconds, metrics}] and seconds.
    """
    import torch

    api, PtychographyTask = import_ptychi()
    saved_dtype, saved_device = torch.get_default_dtype(), torch.get_default_device()
    options = ptychi_options(api, method, iterations, batch_size, device, seed, epie_alpha,
                             lsqml_noise)
    try:
        _sync(device)
        started = time.perf_counter()
        task = PtychographyTask(options, **inputs["arrays"])
        _sync(device)
        build_s = time.perf_counter() - started
        elapsed = build_s
        checkpoints = []
        done = 0
        for stop in checkpoint_schedule(iterations, checkpoint_every):
            chunk = stop - done
            started = time.perf_counter()
            task.run(n_epochs=chunk)
            _sync(device)
            elapsed += time.perf_counter() - started
            done += chunk
            obj = task.get_data_to_cpu("object", as_numpy=True)[0]
            metrics = score(obj)
            checkpoints.append({"iteration": done, "seconds": elapsed, "metrics": metrics})
            logger.info("%s: %d/%d iterations, %.1f s, amp SSIM %.4f, phase SSIM %.4f",
                        method, done, iterations, elapsed, metrics["amp_ssim"],
                        metrics["phase_ssim"])
        loss = task.reconstructor.loss_tracker.table["loss"].to_numpy(dtype=np.float64)
        with task:  # its __exit__ frees pty-chi's buffers
            pass
    finally:
        torch.set_default_dtype(saved_dtype)
        torch.set_default_device(saved_device)
    return {"object": obj, "loss": loss.tolist(), "checkpoints": checkpoints,
            "seconds": elapsed, "build_s": build_s, "iterations": iterations}


def convergence(loss: list[float], floor: float, window: int, tolerance: float) -> dict:
    """Judge a loss curve flat: relative decrease over the last ``window`` iterations below
    ``tolerance``; also the final loss relative to the noise floor."""
    arr = np.asarray(loss, dtype=np.float64)
    w = min(window, len(arr) - 1)
    drop = float((arr[-1 - w] - arr[-1]) / arr[-1]) if w > 0 else float("nan")
    return {"final_loss": float(arr[-1]), "window": w, "relative_drop_last_window": drop,
            "final_over_noise_floor": float(arr[-1] / floor), "tolerance": tolerance,
            "flat": bool(w > 0 and drop < tolerance)}


def match_time(checkpoints: list[dict], ours: dict) -> dict | None:
    """First checkpoint where pty-chi's amp and phase SSIM both reach ours."""
    for point in checkpoints:
        m = point["metrics"]
        if m["amp_ssim"] >= ours["amp_ssim"] and m["phase_ssim"] >= ours["phase_ssim"]:
            return {"iteration": point["iteration"], "seconds": point["seconds"]}
    return None


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------

TABLE_HEAD = ("| method | iterations | wall time s | amp SSIM | phase SSIM | amp PSNR | "
              "phase PSNR | FRC50 amp | FRC50 phase | time / ours |\n"
              "|---|---|---|---|---|---|---|---|---|---|")


def table_row(name: str, iterations: str, seconds: float, m: dict, ratio: float) -> str:
    return (f"| {name} | {iterations} | {seconds:.3g} | {m['amp_ssim']:.4f} | "
            f"{m['phase_ssim']:.4f} | {m['amp_psnr']:.2f} | {m['phase_psnr']:.2f} | "
            f"{m['amp_frc50']:.3f} | {m['phase_frc50']:.3f} | {ratio:.3g}x |")


def render_markdown(report: dict) -> str:
    ours = report["ours"]
    lines = [f"# Quality vs an iterative peer (pty-chi): {report['device']} "
             f"({report['date']})", "",
             f"- scan: `{report['data']['test']}`: {report['data']['n_patterns']} patterns, "
             f"N {report['data']['patch_size']}, {report['data']['nphotons']:g} photons/pattern,"
             f" Poisson noise, overlap {report['data']['overlap']}, object "
             f"{report['data']['object_shape']}",
             f"- scored region (rows, cols): {report['scored_box']} (our stitched coverage "
             "trimmed by half a stitch crop, as `ptycho_torch.inference` scores)",
             f"- ours: `{report['model']['dir']}` ({report['model']['how']}); gridsize "
             f"{ours['gridsize']}, {ours['n_groups']} groups; timed: "
             f"{report['timing']['ours']}; median of {len(ours['seconds'])} repeats "
             f"{[round(s, 3) for s in ours['seconds']]}",
             f"- pty-chi {report['env']['ptychi']}: fixed known probe and positions, object "
             f"from ones, minibatch {report['ptychi']['batch_size']}; ePIE alpha "
             f"{report['ptychi']['epie_alpha']}, LSQML noise model "
             f"{report['ptychi']['lsqml_noise']}; timed: {report['timing']['ptychi']}",
             f"- torch {report['env']['torch']}, {report['env']['threads']} thread(s), "
             f"{report['env']['machine']}", "",
             TABLE_HEAD,
             table_row("ours (PtychoPINN)", "1 pass", ours["median_s"], ours["metrics"], 1.0)]
    for method in METHODS:
        r = report["ptychi"]["methods"][method]
        lines.append(table_row(f"pty-chi {method}", str(r["iterations"]), r["seconds"],
                               r["metrics"], r["seconds"] / ours["median_s"]))
    lines += ["", "## Convergence (data-fit loss: pty-chi's mean (sqrt I_pred - sqrt I_meas)^2)",
              "", f"Noise floor (true object through the simulator's forward model, best "
              f"scale): {report['noise_floor_loss']:.4f}. Flat = relative loss decrease over "
              f"the last {report['ptychi']['convergence_window']} iterations below "
              f"{report['ptychi']['convergence_tolerance']:g}.", "",
              "| method | iterations | final loss | / noise floor | rel. drop, last window "
              "| flat | SSIM amp, phase at half the iterations |", "|---|---|---|---|---|---|---|"]
    for method in METHODS:
        r = report["ptychi"]["methods"][method]
        c = r["convergence"]
        half = r["half_way"]
        lines.append(f"| {method} | {r['iterations']} | {c['final_loss']:.4f} | "
                     f"{c['final_over_noise_floor']:.3f} | {c['relative_drop_last_window']:.2e} "
                     f"| {'yes' if c['flat'] else 'NO'} | {half['amp_ssim']:.4f}, "
                     f"{half['phase_ssim']:.4f} (iteration {half['iteration']}) |")
    lines += ["", "## Targets", "",
              "| peer | amp SSIM gap (peer - ours) | phase SSIM gap | within 0.05 | "
              "speed ratio (peer / ours) | >= 100x | pty-chi reaches our SSIM at |",
              "|---|---|---|---|---|---|---|"]
    for method in METHODS:
        t = report["targets"][method]
        reach = ("never (within the run)" if t["reaches_our_ssim"] is None else
                 f"iteration {t['reaches_our_ssim']['iteration']}, "
                 f"{t['reaches_our_ssim']['seconds']:.3g} s "
                 f"({t['reaches_our_ssim']['seconds'] / ours['median_s']:.3g}x ours)")
        lines.append(f"| {method} | {t['amp_ssim_gap']:+.4f} | {t['phase_ssim_gap']:+.4f} | "
                     f"{'yes' if t['within_0.05_ssim'] else 'NO'} | {t['speed_ratio']:.3g}x | "
                     f"{'yes' if t['at_least_100x_faster'] else 'NO'} | {reach} |")
    lines += ["", f"**Verdict:** {report['verdict']}", "",
              f"Command: `{report['command']}`", ""]
    return "\n".join(lines)


def save_figures(path: Path, conv_path: Path, gt: np.ndarray, recons: dict[str, np.ndarray],
                 box: tuple[slice, slice], scores: dict[str, dict], report: dict) -> None:
    """Aligned amplitude and phase of the scored region (ground truth, ours, ePIE, LSQML)
    into ``path``, and the convergence figure into ``conv_path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ptycho_torch.metrics import align
    from tracking.files import atomic_savefig

    rows, cols = box
    g = gt[rows, cols].astype(np.complex128)
    panels = [("ground truth", np.abs(g), align(g, g)[3], None)]
    for name, obj in recons.items():
        pred_amp, _, pred_phase, _ = align(obj[rows, cols].astype(np.complex128), g)
        panels.append((name, pred_amp, pred_phase, scores[name]))
    amp_lim = (float(np.abs(g).min()), float(np.abs(g).max()))
    gt_phase = panels[0][2]
    phase_lim = (float(gt_phase.min()), float(gt_phase.max()))
    fig, axes = plt.subplots(2, len(panels), figsize=(4.2 * len(panels), 5.4), squeeze=False)
    for col, (name, amp, phase, m) in enumerate(panels):
        for row, (img, lim, cmap, label) in enumerate(((amp, amp_lim, "gray", "amplitude"),
                                                       (phase, phase_lim, "twilight",
                                                        "phase"))):
            ax = axes[row, col]
            ax.imshow(img, cmap=cmap, vmin=lim[0], vmax=lim[1])
            title = f"{name}: {label}"
            if m is not None:
                title += f"\nSSIM {m['amp_ssim' if row == 0 else 'phase_ssim']:.3f}"
            ax.set_title(title, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"{report['data']['test']}: scored region, aligned as the metrics align "
                 f"({report['device']})", fontsize=10)
    fig.tight_layout()
    atomic_savefig(path, fig, dpi=100)
    plt.close(fig)
    save_convergence_figure(conv_path, report)


def save_convergence_figure(path: Path, report: dict) -> None:
    """pty-chi's data-fit loss per iteration and SSIM against its wall time, with ours;
    needs only the JSON report."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tracking.files import atomic_savefig

    ours = report["ours"]
    fig, (ax_loss, ax_ssim) = plt.subplots(1, 2, figsize=(11, 4))
    for method, color in zip(METHODS, ("C0", "C1"), strict=True):
        r = report["ptychi"]["methods"][method]
        ax_loss.semilogy(np.arange(1, len(r["loss"]) + 1), r["loss"], color=color,
                         label=f"pty-chi {method}")
        t = [p["seconds"] for p in r["checkpoints"]]
        for key, style in (("amp_ssim", "-"), ("phase_ssim", "--")):
            ax_ssim.plot(t, [p["metrics"][key] for p in r["checkpoints"]], style, marker=".",
                         color=color, label=f"{method} {key.replace('_', ' ')}")
    ax_loss.axhline(report["noise_floor_loss"], color="k", lw=0.8, ls=":",
                    label="noise floor (true object)")
    ax_loss.set_xscale("log")
    ax_loss.set_xlabel("iteration")
    ax_loss.set_ylabel("mean (sqrt I_pred - sqrt I_meas)^2")
    ax_loss.set_ylim(report["noise_floor_loss"] * 0.8, None)
    ax_loss.legend(fontsize=8)
    ax_loss.set_title("pty-chi data-fit loss")
    for key, style in (("amp_ssim", "-"), ("phase_ssim", "--")):
        ax_ssim.axhline(ours["metrics"][key], color="k", ls=style, lw=0.8,
                        label=f"ours {key.replace('_', ' ')}")
    ax_ssim.axvline(ours["median_s"], color="r", lw=0.8, label="our inference time")
    ax_ssim.set_xscale("log")
    ax_ssim.set_xlabel("pty-chi wall time, s")
    ax_ssim.set_ylabel("SSIM")
    ax_ssim.legend(fontsize=7, ncol=2)
    ax_ssim.set_title("SSIM vs wall time")
    fig.tight_layout()
    atomic_savefig(path, fig, dpi=100)
    plt.close(fig)


# --------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.peer",
        description="Compare our trained model's stitched reconstruction with pty-chi ePIE and "
                    "LSQML (fixed known probe and positions, object from ones, run to "
                    "convergence) on the same simulated test scan: SSIM, PSNR, FRC50 against "
                    "the ground truth and wall time. Needs the bench extra: "
                    "pip install -e '.[bench]'.")
    parser.add_argument("--data-dir", default="datasets",
                        help="folder with train.npz and test.npz from python -m "
                             "ptycho_torch.simulate; both are simulated with the default "
                             "settings when either is missing (default: %(default)s)")
    parser.add_argument("--model-dir", default=None,
                        help="trained model folder (model.pt, config.json) from python -m "
                             "ptycho_torch.train; when omitted, one is trained on "
                             "<data-dir>/train.npz into --train-dir with the project baseline's "
                             "settings: 10 epochs, 256 groups, gridsize 2, batch 4, Poisson "
                             "loss, deterministic (about 2-4 min on 2 CPU cores)")
    parser.add_argument("--train-dir", default="outputs/peer-model",
                        help="where the default model is trained when --model-dir is omitted "
                             "(default: %(default)s)")
    parser.add_argument("--train-epochs", type=int, default=DEFAULT_TRAIN["max_epochs"],
                        help="epochs of that default training (default: %(default)s)")
    parser.add_argument("--epie-iters", type=int, default=300,
                        help="pty-chi ePIE iterations (epochs over all positions); the default "
                             "is where the data-fit loss had flattened on the default scan "
                             "(default: %(default)s)")
    parser.add_argument("--lsqml-iters", type=int, default=200,
                        help="pty-chi LSQML iterations, chosen likewise (default: %(default)s)")
    parser.add_argument("--ptychi-batch-size", type=int, default=32,
                        help="pty-chi minibatch (positions per update); ePIE converges per "
                             "epoch as with single-position updates, at a fraction of the time "
                             "(default: %(default)s)")
    parser.add_argument("--epie-alpha", type=float, default=1.0,
                        help="ePIE object step alpha (Maiden 2017, table 1); 1 is classic ePIE "
                             "(default: %(default)s)")
    parser.add_argument("--lsqml-noise", choices=["gaussian", "poisson"], default="gaussian",
                        help="LSQML noise model (default: %(default)s)")
    parser.add_argument("--checkpoint-every", type=int, default=10,
                        help="score pty-chi's object after iterations 1, 2, 5 and every this "
                             "many, for the SSIM vs time curve and the time to reach our SSIM "
                             "(scoring is not timed) (default: %(default)s)")
    parser.add_argument("--convergence-window", type=int, default=20,
                        help="iterations over which the loss must have flattened "
                             "(default: %(default)s)")
    parser.add_argument("--convergence-tolerance", type=float, default=0.005,
                        help="flat = relative loss decrease over the window below this "
                             "(default: %(default)s)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="device for our inference, pty-chi and the default training "
                             "(default: %(default)s)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads for everything timed (0: torch's default) "
                             "(default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed repeats of our inference after one warm-up; the median is "
                             "reported (default: %(default)s)")
    parser.add_argument("--inference-batch-size", type=int, default=256,
                        help="groups per forward pass of our inference (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed for simulation, training and pty-chi (default: %(default)s)")
    parser.add_argument("--out", default=None,
                        help="folder for <date>-<device>-peer.json, .md, .png and "
                             "-peer-convergence.png (default: bench/results of this checkout)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    prog = "python -m bench.peer"
    problems = [f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}"
                for name in ("epie_iters", "lsqml_iters", "ptychi_batch_size", "repeats",
                             "checkpoint_every", "convergence_window", "train_epochs",
                             "inference_batch_size") if getattr(args, name) < 1]
    if args.threads < 0:
        problems.append(f"--threads must be >= 0, got {args.threads}")
    if problems:
        print(f"{prog}: error: {problems[0]}", file=sys.stderr)
        return 2
    try:
        import_ptychi()
    except PtychiMissing as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"{prog}: error: --device cuda asked for, but no CUDA device is visible to torch",
              file=sys.stderr)
        return 2
    if args.model_dir is not None and not (Path(args.model_dir) / "model.pt").is_file():
        print(f"{prog}: error: --model-dir {args.model_dir}: no model.pt (a training output "
              "folder expected)", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("ptychi").setLevel(logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    from ptycho_torch.data import DataContractError

    try:
        return run(args, prog)
    except DataContractError as exc:  # a damaged or foreign scan file: one line, exit 2
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as exc:
        print(f"{prog}: error: {shlex.join(exc.cmd[1:])} failed (exit {exc.returncode})",
              file=sys.stderr)
        return 1


def run(args: argparse.Namespace, prog: str) -> int:
    import torch

    from ptycho_torch.data import load_scan
    from ptycho_torch.reassembly import covered_box
    from ptycho_torch.workflows import evaluate

    data_dir = Path(args.data_dir)
    ensure_data(data_dir, args.seed)
    scan = load_scan(data_dir / "test.npz")
    if scan.object_guess is None:
        print(f"{prog}: error: {scan.path}: no objectGuess; a simulated scan is needed",
              file=sys.stderr)
        return 2
    if args.model_dir is None:
        train_cmd, train_s = train_default_model(data_dir, Path(args.train_dir), args.device,
                                                 args.seed, args.train_epochs, args.threads)
        model_dir = Path(args.train_dir)
        how = (f"trained here in {train_s:.0f} s: "
               + shlex.join(["python", *train_cmd[1:]]))
    else:
        model_dir = Path(args.model_dir)
        how = "given with --model-dir"

    logger.info("our inference on %s (%s), %d timed repeats", scan.path, args.device,
                args.repeats)
    ours = run_ours(model_dir, scan, args.device, args.inference_batch_size, args.repeats)
    gt = scan.object_guess
    crop = ours["crop"]
    ours["metrics"] = evaluate(ours["object"], ours["weight"], gt, crop)
    box = covered_box(ours["weight"], border=crop // 2)

    def score(obj: np.ndarray) -> dict:
        return evaluate(obj, ours["weight"], gt, crop)

    inputs = to_ptychi_inputs(scan.diffraction, scan.probe, scan.x, scan.y, gt.shape)
    floor = noise_floor_loss(scan)
    peers = {}
    for method, iterations in (("ePIE", args.epie_iters), ("LSQML", args.lsqml_iters)):
        logger.info("pty-chi %s: %d iterations on %s", method, iterations, args.device)
        r = run_ptychi(method, inputs, iterations, args.ptychi_batch_size, args.device,
                       args.seed, args.epie_alpha, args.lsqml_noise, args.checkpoint_every,
                       score)
        r["metrics"] = r["checkpoints"][-1]["metrics"]
        r["convergence"] = convergence(r["loss"], floor, args.convergence_window,
                                       args.convergence_tolerance)
        half = min(r["checkpoints"], key=lambda p: abs(p["iteration"] - iterations / 2))
        r["half_way"] = {"iteration": half["iteration"], **{
            k: half["metrics"][k] for k in ("amp_ssim", "phase_ssim")}}
        peers[method] = r

    import importlib.metadata as md

    date = time.strftime("%Y-%m-%d")
    targets = {}
    for method, r in peers.items():
        gap_amp = r["metrics"]["amp_ssim"] - ours["metrics"]["amp_ssim"]
        gap_phase = r["metrics"]["phase_ssim"] - ours["metrics"]["phase_ssim"]
        ratio = r["seconds"] / ours["median_s"]
        targets[method] = {"amp_ssim_gap": gap_amp, "phase_ssim_gap": gap_phase,
                           "within_0.05_ssim": bool(gap_amp <= 0.05 and gap_phase <= 0.05),
                           "speed_ratio": ratio, "at_least_100x_faster": bool(ratio >= 100),
                           "reaches_our_ssim": match_time(r["checkpoints"], ours["metrics"])}
    quality = all(t["within_0.05_ssim"] for t in targets.values())
    speed = all(t["at_least_100x_faster"] for t in targets.values())
    verdict = (f"quality target (within 0.05 SSIM of both peers, amplitude and phase) "
               f"{'MET' if quality else 'NOT MET'}; speed target (>= 100x faster than both) "
               f"{'MET' if speed else 'NOT MET'} on {args.device}.")
    meta = scan.metadata
    device_name = (torch.cuda.get_device_name(0) if args.device == "cuda"
                   else f"{platform.machine()} CPU, {os.cpu_count()} cores")
    report = {
        "date": date, "device": args.device,
        "command": shlex.join(["python", "-m", "bench.peer", *args.argv]),
        "data": {"test": str(scan.path), "n_patterns": scan.n_patterns,
                 "patch_size": scan.patch_size, "nphotons": meta.get("nphotons", float("nan")),
                 "overlap": meta.get("overlap"), "object_shape": list(gt.shape),
                 "metadata": meta},
        "model": {"dir": str(model_dir), "how": how},
        "scored_box": [[box[0].start, box[0].stop], [box[1].start, box[1].stop]],
        "timing": {
            "ours": "grouping + forward passes + stitching, scan arrays in memory -> stitched "
                    "object on the host; model loaded beforehand, one warm-up run",
            "ptychi": "task build (data, object, probe to the device) + all iterations; "
                      "scoring at checkpoints excluded"},
        "ours": {k: v for k, v in ours.items() if k not in ("object", "weight")},
        "noise_floor_loss": floor,
        "ptychi": {"batch_size": args.ptychi_batch_size, "epie_alpha": args.epie_alpha,
                   "lsqml_noise": args.lsqml_noise, "probe": "fixed (known probeGuess, "
                   "scaled to the data's mean counts)", "positions": "fixed (xcoords, ycoords)",
                   "object_init": "ones", "convergence_window": args.convergence_window,
                   "convergence_tolerance": args.convergence_tolerance,
                   "methods": {m: {k: v for k, v in r.items() if k != "object"}
                               for m, r in peers.items()}},
        "targets": targets, "verdict": verdict,
        "env": {"torch": torch.__version__, "ptychi": md.version("ptychi"),
                "threads": torch.get_num_threads(), "machine": device_name,
                "python": platform.python_version()},
    }
    out = Path(args.out) if args.out else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{date}-{args.device}-peer"
    from tracking.files import atomic_write_json, atomic_write_text

    markdown = render_markdown(report)
    atomic_write_json(stem.with_suffix(".json"), report)
    atomic_write_text(stem.with_suffix(".md"), markdown)
    save_figures(stem.with_suffix(".png"), out / f"{stem.name}-convergence.png", gt,
                 {"ours": ours["object"], "pty-chi ePIE": peers["ePIE"]["object"],
                  "pty-chi LSQML": peers["LSQML"]["object"]}, box,
                 {"ours": ours["metrics"], "pty-chi ePIE": peers["ePIE"]["metrics"],
                  "pty-chi LSQML": peers["LSQML"]["metrics"]}, report)
    print(markdown)
    print(f"wrote {stem}.json, .md, .png and -convergence.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
