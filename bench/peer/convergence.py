"""Judging pty-chi's runs: loss flatness, the noise floor, the time to reach our SSIM."""

from __future__ import annotations

import numpy as np

from bench.peer.record import Checkpoint, Convergence, HalfWay, Reach


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


def convergence(loss: list[float], floor: float, window: int, tolerance: float) -> Convergence:
    """Judge a loss curve flat: relative decrease over the last ``window`` iterations below
    ``tolerance``; also the final loss relative to the noise floor."""
    arr = np.asarray(loss, dtype=np.float64)
    w = min(window, len(arr) - 1)
    drop = float((arr[-1 - w] - arr[-1]) / arr[-1]) if w > 0 else float("nan")
    return Convergence(final_loss=float(arr[-1]), window=w, relative_drop_last_window=drop,
                       final_over_noise_floor=float(arr[-1] / floor), tolerance=tolerance,
                       flat=bool(w > 0 and drop < tolerance))


def match_time(checkpoints: list[Checkpoint], ours: dict[str, float]) -> Reach | None:
    """First checkpoint where pty-chi's amp and phase SSIM both reach ours."""
    for point in checkpoints:
        m = point.metrics
        if m["amp_ssim"] >= ours["amp_ssim"] and m["phase_ssim"] >= ours["phase_ssim"]:
            return Reach(iteration=point.iteration, seconds=point.seconds)
    return None


def half_way(checkpoints: list[Checkpoint], iterations: int) -> HalfWay:
    """SSIM at the checkpoint nearest half of ``iterations``."""
    half = min(checkpoints, key=lambda p: abs(p.iteration - iterations / 2))
    return HalfWay(iteration=half.iteration, amp_ssim=half.metrics["amp_ssim"],
                   phase_ssim=half.metrics["phase_ssim"])


def checkpoint_schedule(iterations: int, every: int) -> list[int]:
    """Iterations after which pty-chi's object is scored: 1, 2, 5 (the early rise), then
    every ``every`` and the last."""
    stops = {1, 2, 5, iterations, *range(every, iterations + 1, every)}
    return sorted(i for i in stops if 1 <= i <= iterations)
