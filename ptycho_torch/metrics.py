"""Reconstruction metrics against ground truth, after the reference's alignment.

Alignment: the global phase offset is removed, then a least-squares phase plane from each
image; the predicted amplitude is scaled by mean(gt) / mean(pred). SSIM and PSNR are
scikit-image's; phase is mapped to [0, 1] by (phi + pi) / (2 pi) for SSIM and PSNR.
"""

from __future__ import annotations

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity


def remove_phase_plane(phase: np.ndarray) -> np.ndarray:
    """Subtract the least-squares plane a + b*y + c*x from a (H, W) phase image."""
    h, w = phase.shape
    yy, xx = np.mgrid[0:h, 0:w]
    design = np.stack([np.ones(h * w), yy.ravel(), xx.ravel()], axis=1)
    coef, *_ = np.linalg.lstsq(design, phase.ravel(), rcond=None)
    return phase - (design @ coef).reshape(h, w)


def global_phase_aligned(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """``pred`` times the unit phasor that best matches it to ``gt`` (least squares).

    A constant phase is invisible to every measurement, so pictures show the reconstruction
    with it removed; no other change is made.
    """
    offset = np.angle(np.sum(pred * np.conj(gt)))
    return (pred * np.exp(-1j * offset)).astype(pred.dtype)


def align(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                      np.ndarray]:
    """(H, W) complex pred and gt -> aligned amplitudes and phases (pred_amp, gt_amp,
    pred_phase, gt_phase)."""
    offset = np.angle(np.sum(pred * np.conj(gt)))
    pred_phase = remove_phase_plane(np.angle(pred * np.exp(-1j * offset)))
    gt_phase = remove_phase_plane(np.angle(gt))
    gt_amp = np.abs(gt)
    pred_amp = np.abs(pred)
    pred_amp = pred_amp * (gt_amp.mean() / max(pred_amp.mean(), 1e-12))
    return pred_amp, gt_amp, pred_phase, gt_phase


def frc50(a: np.ndarray, b: np.ndarray) -> float:
    """Spatial frequency (cycles/pixel, <= 0.5) where the Fourier ring correlation of two
    (H, W) images first drops below 0.5; 0.5 if it never does."""
    fa = np.fft.fft2(a - a.mean())
    fb = np.fft.fft2(b - b.mean())
    h, w = a.shape
    ky = np.fft.fftfreq(h)[:, None]
    kx = np.fft.fftfreq(w)[None, :]
    radius = np.sqrt(ky**2 + kx**2)
    step = 1.0 / min(h, w)
    ring = np.floor(radius / step).astype(int).ravel()
    n_rings = int(0.5 / step)
    keep = ring < n_rings
    cross = np.bincount(ring[keep], (fa * np.conj(fb)).real.ravel()[keep], n_rings)
    pa = np.bincount(ring[keep], (np.abs(fa) ** 2).ravel()[keep], n_rings)
    pb = np.bincount(ring[keep], (np.abs(fb) ** 2).ravel()[keep], n_rings)
    frc = cross / np.sqrt(np.maximum(pa * pb, 1e-30))
    below = np.flatnonzero(frc[1:] < 0.5)
    return 0.5 if below.size == 0 else float((below[0] + 1) * step)


def compute_metrics(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """SSIM, PSNR, MAE, FRC50 and Pearson r of amplitude and phase; (H, W) complex inputs."""
    if pred.shape != gt.shape:
        raise ValueError(f"shapes differ: prediction {pred.shape}, ground truth {gt.shape}")
    pred_amp, gt_amp, pred_phase, gt_phase = align(pred.astype(np.complex128),
                                                   gt.astype(np.complex128))
    amp_range = float(gt_amp.max() - gt_amp.min()) or 1.0
    pred_ph01 = (np.clip(pred_phase, -np.pi, np.pi) + np.pi) / (2 * np.pi)
    gt_ph01 = (np.clip(gt_phase, -np.pi, np.pi) + np.pi) / (2 * np.pi)
    metrics = {
        "amp_ssim": structural_similarity(gt_amp, pred_amp, data_range=amp_range),
        "phase_ssim": structural_similarity(gt_ph01, pred_ph01, data_range=1.0),
        "amp_psnr": peak_signal_noise_ratio(gt_amp, pred_amp, data_range=amp_range),
        "phase_psnr": peak_signal_noise_ratio(gt_ph01, pred_ph01, data_range=1.0),
        "amp_mae": float(np.mean(np.abs(pred_amp - gt_amp))),
        "phase_mae": float(np.mean(np.abs(pred_phase - gt_phase))),
        "phase_rms_rad": float(np.sqrt(np.mean((pred_phase - gt_phase) ** 2))),
        "amp_frc50": frc50(pred_amp, gt_amp),
        "phase_frc50": frc50(pred_phase, gt_phase),
        "amp_pearson": float(np.corrcoef(pred_amp.ravel(), gt_amp.ravel())[0, 1]),
        "phase_pearson": float(np.corrcoef(pred_phase.ravel(), gt_phase.ravel())[0, 1]),
    }
    return {key: float(np.nan_to_num(value)) for key, value in metrics.items()}
