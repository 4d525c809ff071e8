"""ptycho_torch.metrics pinned by known values: each expected number is built independently
of the function under test (analytic patterns orthogonal to planes, band-limited pairs whose
correlation per ring is known), and each convention by a case that would fail without it."""

from __future__ import annotations

import numpy as np
import pytest

from ptycho_torch.metrics import align, compute_metrics, frc50, remove_phase_plane


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Centred pixel coordinates (y, x) of an (h, w) image."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    return yy - (h - 1) / 2, xx - (w - 1) / 2


def _plane_free_pattern(h: int, w: int) -> np.ndarray:
    """A zero-mean pattern orthogonal to 1, y and x on the pixel grid, by construction:
    the saddle y*x (odd in both axes about the centre) plus an even bowl minus its mean."""
    y, x = _grid(h, w)
    bowl = (y / h) ** 2 + (x / w) ** 2
    return 0.4 * (y / h) * (x / w) * 4 + 0.6 * (bowl - bowl.mean())


@pytest.mark.parametrize("shape", [(33, 47), (64, 64), (17, 9)])
def test_remove_phase_plane_of_an_exact_plane_is_zero(shape):
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    plane = 0.73 * xx - 0.41 * yy + 2.9
    np.testing.assert_allclose(remove_phase_plane(plane), 0.0, atol=1e-12)


@pytest.mark.parametrize("shape", [(33, 47), (64, 64)])
def test_remove_phase_plane_keeps_a_pattern_orthogonal_to_planes(shape):
    h, w = shape
    pattern = _plane_free_pattern(h, w)
    y, x = _grid(h, w)
    # the pattern really is orthogonal to the plane basis (independent of the function)
    for basis in (np.ones_like(y), y, x):
        assert abs(np.sum(pattern * basis)) < 1e-9
    yy, xx = np.mgrid[0:h, 0:w]
    phase = pattern + 0.05 * xx + 0.02 * yy - 1.3
    np.testing.assert_allclose(remove_phase_plane(phase), pattern, atol=1e-12)
    # the plane is not merely the mean: subtracting the mean leaves the tilt in
    assert np.max(np.abs((phase - phase.mean()) - pattern)) > 0.5


def test_align_removes_phase_plane_offset_and_amplitude_scale_exactly(rng):
    h, w = 41, 37
    amplitude = 0.5 + rng.random((h, w))
    phi = _plane_free_pattern(h, w)
    yy, xx = np.mgrid[0:h, 0:w]
    gt = amplitude * np.exp(1j * phi)
    # an offset of 3 rad: the raw phase of pred wraps at +-pi, so this also pins that the
    # global offset is removed before the plane fit
    tilt = 0.012 * xx - 0.009 * yy
    pred = 2.5 * amplitude * np.exp(1j * (phi + tilt + 3.0))
    assert np.ptp(np.angle(pred)) > np.pi  # the wrap is really there
    pred_amp, gt_amp, pred_phase, gt_phase = align(pred, gt)
    np.testing.assert_allclose(gt_amp, amplitude, rtol=0, atol=1e-12)
    np.testing.assert_allclose(pred_amp, amplitude, rtol=0, atol=1e-12)
    np.testing.assert_allclose(gt_phase, phi, rtol=0, atol=1e-12)
    np.testing.assert_allclose(pred_phase, phi, rtol=0, atol=1e-12)


def test_align_does_not_undo_a_wrong_amplitude_pattern(rng):
    """Only a global scale is removed: a pred whose amplitude differs in shape stays
    different (the scale applied is mean(gt) / mean(pred), nothing else)."""
    h, w = 24, 31
    amplitude = 0.5 + rng.random((h, w))
    other = 0.5 + rng.random((h, w))
    pred_amp, gt_amp, _, _ = align(other.astype(complex), amplitude.astype(complex))
    np.testing.assert_allclose(pred_amp, other * amplitude.mean() / other.mean(), atol=1e-12)
    assert pred_amp.mean() == pytest.approx(gt_amp.mean(), abs=1e-12)
    assert np.max(np.abs(pred_amp - gt_amp)) > 0.3


@pytest.mark.parametrize("shape", [(64, 64), (33, 33), (45, 63)])
def test_frc50_of_an_image_with_itself_is_the_nyquist_limit(shape, rng):
    """At full correlation every ring is 1, never below 0.5: the function reports 0.5."""
    image = rng.normal(size=shape)
    assert frc50(image, image) == 0.5
    # scale and offset do not matter (FRC is normalised and the mean is removed)
    assert frc50(image, 3.0 * image + 7.0) == 0.5


@pytest.mark.parametrize("seed", range(5))
def test_frc50_of_independent_white_noise_is_low(seed):
    """Independent images: each ring's correlation is sample noise around 0, with standard
    deviation ~ 1/sqrt(pixels in the ring); the first rings hold 8-20 pixels, so the curve
    drops below 0.5 within the first few rings (0.1 would need rings 1-6 all >= 0.5)."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(2, 64, 64))
    assert frc50(a, b) <= 0.1


def _band_limited_pair(shape: tuple[int, int], cutoff: float, rng) -> tuple[np.ndarray,
                                                                             np.ndarray]:
    """Two real images whose Fourier coefficients are identical for radius < cutoff
    (cycles/px) and independent white noise at and above it."""
    h, w = shape
    radius = np.hypot(np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :])
    low = radius < cutoff - 1e-9  # points on the cutoff ring count as "above"
    common, n1, n2 = (np.fft.fft2(rng.normal(size=shape)) for _ in range(3))
    a = np.fft.ifft2(np.where(low, common, n1))
    b = np.fft.ifft2(np.where(low, common, n2))
    assert np.max(np.abs(a.imag)) < 1e-9 and np.max(np.abs(b.imag)) < 1e-9  # mask is Hermitian
    return a.real, b.real


@pytest.mark.parametrize(("shape", "ring"), [((64, 64), 16), ((63, 63), 20), ((45, 63), 9)])
def test_frc50_of_a_band_limited_pair_lands_on_the_cutoff(shape, ring, rng):
    """Rings are 1/min(H, W) wide; with the cutoff on a ring edge, rings below it correlate
    exactly (FRC = 1) and the first ring at or above it holds only independent noise (FRC
    ~ 0 +- 1/sqrt(~2 pi ring) ~ 0.1, five sigma from 0.5 for these rings; the few points whose
    radius lies exactly on the edge may round into the ring below, which they lower by a few
    per cent only). So the answer is the cutoff itself, to the resolution of one ring; the
    test asserts equality, and the neighbouring-ring answers would each fail it."""
    step = 1.0 / min(shape)
    cutoff = ring * step
    a, b = _band_limited_pair(shape, cutoff, rng)
    assert frc50(a, b) == pytest.approx(cutoff, abs=1e-12)
    # and the cutoff moves the answer: one ring further out, the answer moves with it
    a, b = _band_limited_pair(shape, cutoff + step, rng)
    assert frc50(a, b) == pytest.approx(cutoff + step, abs=1e-12)


def _structured_object(shape: tuple[int, int], rng, phase_std: float = 0.3) -> np.ndarray:
    """A complex object with structure a few pixels wide (smoothed noise, no symmetry) plus
    a weak white-noise component, so that every Fourier ring holds power well above float32
    rounding (without it, the FRC of a perfect complex64 copy of a smooth image drops below
    0.5 in the outer rings, where only rounding noise is left: 0.35 instead of 0.5)."""
    h, w = shape
    radius = np.hypot(np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :])
    smooth = np.exp(-(radius / 0.12) ** 2)

    def field() -> np.ndarray:
        f = np.fft.ifft2(np.fft.fft2(rng.normal(size=shape)) * smooth).real
        return (f - f.mean()) / f.std()

    amplitude = np.clip(1.0 + 0.25 * field() + 0.05 * rng.normal(size=shape), 0.1, None)
    phase = phase_std * field() + 0.05 * rng.normal(size=shape)
    return amplitude * np.exp(1j * phase)


def test_compute_metrics_of_a_scaled_tilted_copy_is_perfect(rng):
    """Amplitude scale, constant phase and phase plane are all aligned away."""
    gt = _structured_object((48, 55), rng)
    yy, xx = np.mgrid[0:48, 0:55]
    tilt = 0.004 * xx + 0.005 * yy
    # align does not unwrap: the offset-removed phase must span less than pi, or the plane
    # fit sees wrapped values (with a 0.02 rad/px tilt this seed's phase SSIM is 0.984)
    assert np.ptp(np.angle(gt)) + np.ptp(tilt) < np.pi
    pred = 0.3 * gt * np.exp(1j * (tilt + 1.0))
    metrics = compute_metrics(pred.astype(np.complex64), gt.astype(np.complex64))
    assert metrics["amp_ssim"] == pytest.approx(1.0, abs=1e-5)
    assert metrics["phase_ssim"] == pytest.approx(1.0, abs=1e-5)
    assert metrics["amp_mae"] < 1e-5 and metrics["phase_rms_rad"] < 1e-5
    assert metrics["amp_frc50"] == metrics["phase_frc50"] == 0.5
    assert metrics["amp_pearson"] == pytest.approx(1.0, abs=1e-9)
    assert metrics["phase_pearson"] == pytest.approx(1.0, abs=1e-9)
    assert metrics["amp_psnr"] > 80 and metrics["phase_psnr"] > 80


@pytest.mark.parametrize("transform", ["mirror_x", "mirror_y", "shift_2px_x", "shift_2px_y"])
def test_compute_metrics_ssim_drops_for_a_mirrored_or_shifted_image(transform, rng):
    """A convention error (flipped axis, 2 px offset) must show in the score, not be aligned
    away. Highest values over 21 seeds: mirrored SSIM 0.29, shifted by 2 px 0.66 (a perfect
    copy scores 1, see above). The bounds sit above those with margin."""
    gt = _structured_object((64, 64), rng, phase_std=0.6)
    pred = {"mirror_x": gt[:, ::-1], "mirror_y": gt[::-1, :],
            "shift_2px_x": np.roll(gt, 2, axis=1), "shift_2px_y": np.roll(gt, 2, axis=0)}[
        transform]
    bound = 0.4 if transform.startswith("mirror") else 0.75
    metrics = compute_metrics(pred, gt)
    assert metrics["amp_ssim"] < bound
    assert metrics["phase_ssim"] < bound


def test_compute_metrics_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shapes differ"):
        compute_metrics(np.ones((8, 8), complex), np.ones((8, 9), complex))
