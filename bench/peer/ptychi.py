"""Our scan -> pty-chi's inputs and options (the arrays part is pure, tested without pty-chi).

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

import math
from dataclasses import dataclass

import numpy as np

PTYCHI_MISSING = "pty-chi is not installed: pip install -e '.[bench]'"
# pty-chi's position origin: patch pixel (i, j) sits at p + origin - (N-1)/2 + (i, j), so
# origin -1/2 makes pty-chi positions equal to our patch centres (index N/2 on the position).
PTYCHI_ORIGIN_YX = (-0.5, -0.5)
METHODS = ("ePIE", "LSQML")


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


@dataclass(frozen=True, kw_only=True)
class PtychiSettings:
    """How pty-chi runs, for every method: minibatch (positions per update), device, seed,
    ePIE's object step, LSQML's noise model, and how often the object is scored."""

    batch_size: int
    device: str
    seed: int
    epie_alpha: float
    lsqml_noise: str
    checkpoint_every: int


def ptychi_options(api, method: str, iterations: int, settings: PtychiSettings):
    """pty-chi options: fixed probe and positions, object from ones, given iterations."""
    if method == "ePIE":
        options = api.EPIEOptions()
        options.object_options.alpha = settings.epie_alpha
    else:
        options = api.LSQMLOptions()
        options.reconstructor_options.noise_model = api.NoiseModels[settings.lsqml_noise.upper()]
        # the probe is known and fixed: no first-epoch probe-intensity rescaling
        options.reconstructor_options.rescale_probe_intensity_in_first_epoch = False
    rec = options.reconstructor_options
    rec.num_epochs = iterations
    rec.batch_size = settings.batch_size
    rec.random_seed = settings.seed
    rec.default_device = api.Devices.GPU if settings.device == "cuda" else api.Devices.CPU
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
