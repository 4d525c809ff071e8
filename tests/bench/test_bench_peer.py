"""bench.peer: our scan -> pty-chi inputs (exact on hand-made cases), the missing-extra path.

Only the last test needs pty-chi (the bench extra, not installed in CI): it is skipped there.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from bench.peer import cli, convergence, ptychi, runs
from bench.peer.ptychi import PtychiSettings
from bench.peer.record import Checkpoint, Reach
from ptycho_torch import physics


def test_intensities_are_squared_amplitudes_with_dc_at_the_corner(rng):
    n = 8
    psi = rng.normal(size=(3, n, n)) + 1j * rng.normal(size=(3, n, n))
    psi[0] = 1.0  # a flat exit wave: all its power at zero frequency
    # our convention: centred orthonormal far-field amplitude
    amplitude = physics.far_field_amplitude(torch.from_numpy(psi).to(torch.complex64)).numpy()
    intensity = ptychi.ptychi_intensities(amplitude)
    assert intensity.dtype == np.float32 and intensity.shape == (3, n, n)
    # pty-chi's forward model: |fft2|^2 with no shift (DC at [0, 0]); same up to FFT norm
    expected = np.abs(np.fft.fft2(psi, norm="ortho")) ** 2
    np.testing.assert_allclose(intensity, expected, rtol=1e-4, atol=1e-5)
    assert intensity[0, 0, 0] == pytest.approx(n * n, rel=1e-5)
    assert np.count_nonzero(intensity[0] > 1e-6) == 1


def test_intensities_shift_a_single_bright_pixel_from_centre_to_corner():
    amplitude = np.zeros((1, 6, 6), np.float32)
    amplitude[0, 3, 3] = 2.0  # index N/2: our zero frequency
    amplitude[0, 3, 4] = 1.0  # +1 frequency along x
    intensity = ptychi.ptychi_intensities(amplitude)
    assert intensity[0, 0, 0] == 4.0 and intensity[0, 0, 1] == 1.0
    assert intensity.sum() == 5.0


def test_positions_cover_the_same_object_pixels_as_ours():
    n = 8
    x = np.array([10.0, 13.0, 20.0])
    y = np.array([12.0, 9.0, 15.0])
    pos_y, pos_x, origin = ptychi.ptychi_positions(x, y)
    corner = ptychi.ptychi_patch_corner(pos_y, pos_x, origin, n)
    # ours: patch pixel (0, 0) of a patch centred at (x, y) is object pixel (y - N/2, x - N/2)
    np.testing.assert_array_equal(corner, np.stack([y - n / 2, x - n / 2], axis=1))
    # and our extract_patches really reads that window
    obj = np.arange(40 * 40, dtype=np.float64).reshape(40, 40)
    patches = physics.extract_patches(torch.from_numpy(obj),
                                      torch.from_numpy(np.stack([x, y], axis=1)), n).numpy()
    for patch, (row, col) in zip(patches, corner.astype(int), strict=True):
        np.testing.assert_array_equal(patch, obj[row:row + n, col:col + n])


def test_probe_scaled_to_mean_counts_through_unnormalized_fft(rng):
    n = 8
    probe = (rng.normal(size=(n, n)) + 1j * rng.normal(size=(n, n))).astype(np.complex64)
    counts = rng.poisson(50.0, size=(4, n, n)).astype(np.float32)
    scaled = ptychi.ptychi_probe(probe, counts)
    assert scaled.shape == (1, 1, n, n) and scaled.dtype == np.complex64
    far_field_power = np.sum(np.abs(np.fft.fft2(scaled[0, 0].astype(np.complex128))) ** 2)
    assert far_field_power == pytest.approx(counts.sum(axis=(1, 2)).mean(), rel=1e-5)
    # a pure scale: the probe's shape is untouched
    ratio = scaled[0, 0] / probe
    np.testing.assert_allclose(ratio, ratio[0, 0], rtol=1e-5)
    assert abs(ratio[0, 0].imag) < 1e-6


def test_to_ptychi_inputs_bundles_everything_with_an_object_of_ones(rng):
    diffraction = rng.random((5, 8, 8)).astype(np.float32)
    probe = np.ones((8, 8), np.complex64)
    x, y = rng.uniform(10, 20, 5), rng.uniform(10, 20, 5)
    inputs = ptychi.to_ptychi_inputs(diffraction, probe, x, y, (30, 40))
    arrays = inputs["arrays"]
    assert set(arrays) == {"diffraction_data", "probe_data", "probe_position_x_px",
                           "probe_position_y_px", "object_data"}
    np.testing.assert_array_equal(arrays["object_data"], np.ones((1, 30, 40)))
    np.testing.assert_array_equal(arrays["probe_position_x_px"], x)
    np.testing.assert_array_equal(arrays["probe_position_y_px"], y)
    assert inputs["origin_yx"] == (-0.5, -0.5)
    np.testing.assert_allclose(arrays["diffraction_data"],
                               np.fft.ifftshift(diffraction.astype(np.float64) ** 2, axes=(1, 2)),
                               rtol=1e-6)


def test_convergence_and_match_time():
    loss = [10.0, 2.0, 1.0, 0.999, 0.998]
    flat = convergence.convergence(loss, floor=0.5, window=2, tolerance=0.005)
    assert flat.flat and flat.final_over_noise_floor == pytest.approx(1.996)
    assert flat.relative_drop_last_window == pytest.approx((1.0 - 0.998) / 0.998)
    assert not convergence.convergence(loss, floor=0.5, window=3, tolerance=0.005).flat
    points = [Checkpoint(iteration=10, seconds=1.0, metrics={"amp_ssim": 0.5, "phase_ssim": 0.9}),
              Checkpoint(iteration=20, seconds=2.0, metrics={"amp_ssim": 0.7, "phase_ssim": 0.8}),
              Checkpoint(iteration=30, seconds=3.0, metrics={"amp_ssim": 0.7, "phase_ssim": 0.9})]
    assert convergence.match_time(points, {"amp_ssim": 0.6, "phase_ssim": 0.85}) == Reach(
        iteration=30, seconds=3.0)
    assert convergence.match_time(points, {"amp_ssim": 0.8, "phase_ssim": 0.1}) is None
    half = convergence.half_way(points, 44)  # nearest to iteration 22
    assert (half.iteration, half.amp_ssim, half.phase_ssim) == (20, 0.7, 0.8)


def test_missing_ptychi_exits_2_with_one_line(monkeypatch, capsys, tmp_path):
    # None in sys.modules makes `import ptychi...` raise ImportError, installed or not
    for name in ("ptychi", "ptychi.api", "ptychi.api.task"):
        monkeypatch.setitem(sys.modules, name, None)
    code = cli.main(["--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["python -m bench.peer: error: pty-chi is not installed: "
                   "pip install -e '.[bench]'"]
    assert not (tmp_path / "data").exists() and not (tmp_path / "out").exists()


def test_bad_iteration_count_exits_2(capsys, tmp_path):
    assert cli.main(["--epie-iters", "0", "--out", str(tmp_path)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_ptychi_extracts_the_patches_ours_does(rng):
    """With pty-chi installed: its own patch extraction at our converted positions reads the
    same object pixels as ours (integer and half-pixel-free positions: both exact)."""
    pytest.importorskip("ptychi")
    from ptychi.image_proc import extract_patches_fourier_shift

    n = 8
    obj = (rng.normal(size=(30, 36)) + 1j * rng.normal(size=(30, 36))).astype(np.complex64)
    x = np.array([8.0, 15.0, 27.0])
    y = np.array([9.0, 14.0, 20.0])
    pos_y, pos_x, origin = ptychi.ptychi_positions(x, y)
    # pty-chi adds the origin to positions, then extracts around them (object.py)
    pixel_positions = torch.tensor(np.stack([pos_y, pos_x], axis=1) + np.array(origin))
    theirs = extract_patches_fourier_shift(torch.from_numpy(obj), pixel_positions, (n, n))
    ours = physics.extract_patches(torch.from_numpy(obj),
                                   torch.from_numpy(np.stack([x, y], axis=1)), n)
    np.testing.assert_allclose(theirs.numpy(), ours.numpy(), atol=1e-5)


@pytest.mark.slow
def test_ptychi_epie_recovers_the_object_in_our_frame(small_files):
    """With pty-chi installed: a short ePIE on the small exact scan fits the data and its
    object lines up with objectGuess (no shift, no flip) where the scan covers it."""
    pytest.importorskip("ptychi")
    from skimage.registration import phase_cross_correlation

    from ptycho_torch.data import load_scan
    from ptycho_torch.metrics import compute_metrics

    scan = load_scan(small_files["test"])
    gt = scan.object_guess
    inputs = ptychi.to_ptychi_inputs(scan.diffraction, scan.probe, scan.x, scan.y, gt.shape)
    rows = slice(int(scan.y.min()), int(scan.y.max()) + 1)
    cols = slice(int(scan.x.min()), int(scan.x.max()) + 1)

    def score(obj):
        return compute_metrics(obj[rows, cols], gt[rows, cols])

    settings = PtychiSettings(batch_size=8, device="cpu", seed=0, epie_alpha=1.0,
                              lsqml_noise="gaussian", checkpoint_every=15)
    result = runs.run_ptychi("ePIE", inputs, 30, settings, score)
    loss = result.loss
    assert len(loss) == 30 and loss[-1] < 0.05 * loss[0]
    final = result.checkpoints[-1].metrics
    assert final["amp_ssim"] > 0.9 and final["phase_ssim"] > 0.9
    shift, _, _ = phase_cross_correlation(np.abs(gt[rows, cols]),
                                          np.abs(result.object[rows, cols]),
                                          upsample_factor=10)
    assert np.all(np.abs(shift) <= 0.3)
    assert torch.get_default_dtype() == torch.float32  # pty-chi's globals restored


def test_checkpoint_schedule():
    assert convergence.checkpoint_schedule(25, 10) == [1, 2, 5, 10, 20, 25]
    assert convergence.checkpoint_schedule(3, 10) == [1, 2, 3]
    assert convergence.checkpoint_schedule(1, 1) == [1]


def test_damaged_scan_and_missing_model_exit_2_with_one_line(capsys, tmp_path):
    pytest.importorskip("ptychi")  # without it, main stops earlier (test above)
    data = tmp_path / "data"
    data.mkdir()
    for name in ("train.npz", "test.npz"):
        (data / name).write_text("not an npz")
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.pt").write_text("")
    assert cli.main(["--data-dir", str(data), "--model-dir", str(model),
                      "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "test.npz" in err[0] and "NPZ" in err[0]
    assert cli.main(["--data-dir", str(data), "--model-dir", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no model.pt" in err[0]
    assert not (tmp_path / "out").exists()
