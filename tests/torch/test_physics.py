"""Physics conventions pinned by exact tests: bright pixels, known shifts, adjoints, invariants."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ptycho_torch import physics


def _inner(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.sum(a * torch.conj(b)) if a.is_complex() else torch.sum(a * b)


def test_translate_moves_bright_pixel_by_plus_shift():
    x = torch.zeros(1, 9, 11)
    x[0, 4, 5] = 1.0
    out = physics.translate(x, torch.tensor([[2.0, -1.0]]))  # dx = +2, dy = -1
    assert out[0, 3, 7] == pytest.approx(1.0)
    assert out.sum() == pytest.approx(1.0)


def test_translate_half_pixel_splits_bright_pixel():
    x = torch.zeros(1, 8, 8, dtype=torch.float64)
    x[0, 4, 4] = 1.0
    out = physics.translate(x, torch.tensor([[0.5, 0.0]], dtype=torch.float64))
    assert out[0, 4, 4] == pytest.approx(0.5)
    assert out[0, 4, 5] == pytest.approx(0.5)
    assert out[0, 4, 3] == 0.0


def test_translate_round_trip_is_identity_inside_support(rng):
    x = torch.zeros(2, 16, 16, dtype=torch.complex128)
    block = rng.normal(size=(2, 6, 6)) + 1j * rng.normal(size=(2, 6, 6))
    x[:, 5:11, 5:11] = torch.from_numpy(block)
    t = torch.tensor([[3.0, -2.0], [-1.0, 4.0]], dtype=torch.float64)
    back = physics.translate(physics.translate(x, t), -t)
    torch.testing.assert_close(back, x)


def test_translate_adjoint_is_negative_shift(rng):
    x = torch.from_numpy(rng.normal(size=(3, 13, 17)) + 1j * rng.normal(size=(3, 13, 17)))
    y = torch.from_numpy(rng.normal(size=(3, 13, 17)) + 1j * rng.normal(size=(3, 13, 17)))
    t = torch.from_numpy(rng.uniform(-4, 4, size=(3, 2)))
    lhs = _inner(physics.translate(x, t), y)
    rhs = _inner(x, physics.translate(y, -t))
    torch.testing.assert_close(lhs, rhs)


def test_extract_puts_the_centre_pixel_at_index_n_over_2():
    obj = torch.zeros(40, 50, dtype=torch.complex64)
    obj[30, 41] = 1.0 + 0j
    patch = physics.extract_patches(obj, torch.tensor([[41.0, 30.0]]), 8)
    assert patch[0, 4, 4].real == pytest.approx(1.0)
    shifted = physics.extract_patches(obj, torch.tensor([[39.0, 31.0]]), 8)
    # centre at x = 39, y = 31: the pixel (y=30, x=41) sits at patch (4 - 1, 4 + 2)
    assert shifted[0, 3, 6].real == pytest.approx(1.0)
    assert shifted.abs().sum() == pytest.approx(1.0)


def test_extract_place_are_adjoint(rng):
    obj = torch.from_numpy(rng.normal(size=(37, 29)) + 1j * rng.normal(size=(37, 29)))
    centres = torch.from_numpy(np.stack([rng.uniform(-3, 32, 7), rng.uniform(-3, 40, 7)], 1))
    patches = torch.from_numpy(rng.normal(size=(7, 10, 10)) + 1j * rng.normal(size=(7, 10, 10)))
    lhs = _inner(physics.extract_patches(obj, centres, 10), patches)
    rhs = _inner(obj, physics.place_patches(patches, centres, (37, 29)))
    torch.testing.assert_close(lhs, rhs)


def test_far_field_parseval_and_centred_zero_frequency(rng):
    psi = torch.from_numpy(rng.normal(size=(2, 16, 16)) + 1j * rng.normal(size=(2, 16, 16)))
    intensity = physics.far_field_intensity(psi)
    torch.testing.assert_close(intensity.sum(dim=(-2, -1)), psi.abs().pow(2).sum(dim=(-2, -1)))
    flat = torch.ones(1, 16, 16, dtype=torch.complex128)
    spot = physics.far_field_intensity(flat)
    assert spot[0, 8, 8] == pytest.approx(256.0)
    assert spot.sum() == pytest.approx(256.0)
    assert torch.all(intensity >= 0)


def test_far_field_global_phase_invariance(rng):
    psi = torch.from_numpy(rng.normal(size=(16, 16)) + 1j * rng.normal(size=(16, 16)))
    rotated = psi * torch.exp(torch.tensor(1j * 0.7))
    torch.testing.assert_close(physics.far_field_intensity(rotated),
                               physics.far_field_intensity(psi))


def test_probe_normalization_mean_abs_in_disk(rng):
    probe = torch.from_numpy((rng.random((32, 32)) + 0.1) * np.exp(1j * rng.random((32, 32))))
    normalized = physics.normalize_probe(probe, probe_scale=4.0)
    mask = physics.disk_mask(32, 8).bool()
    assert normalized.abs()[mask].mean().item() == pytest.approx(0.25, rel=1e-6)


def test_intensity_scale_matches_reference_figure():
    assert physics.intensity_scale(1e9, 64) == pytest.approx(988.2, abs=0.05)


def test_merge_of_consistent_patches_returns_them(small_scan):
    obj = torch.from_numpy(small_scan["object"]).to(torch.complex128)
    n = 32
    centre = torch.tensor([60.0, 55.0], dtype=torch.float64)
    # integer differences between channels: re-extraction is then exact, not re-interpolated
    offsets = torch.tensor([[-3.5, -2.25], [4.5, -3.25], [-2.5, 3.75], [3.5, 4.75]],
                           dtype=torch.float64)
    patches = physics.extract_patches(obj, centre + offsets, n)[None]
    mask = torch.zeros(n, n, dtype=torch.float64)
    mask[n // 4 : 3 * n // 4, n // 4 : 3 * n // 4] = 1.0
    merged = physics.merge_and_reextract(patches, offsets[None], mask)
    core = slice(n // 4 + 1, 3 * n // 4 - 1)
    # inside each channel's own central region the merge reproduces the object up to the
    # 1e-3 regularizer of the divisor
    torch.testing.assert_close(merged[..., core, core], patches[..., core, core], rtol=3e-3,
                               atol=3e-3)
    # a sign error in the offsets would put neighbours' content in the wrong place
    wrong = physics.merge_and_reextract(patches, -offsets[None], mask)
    assert (wrong[..., core, core] - patches[..., core, core]).abs().max() > 0.05


@pytest.mark.parametrize("fn_name", ["translate", "extract", "amplitude", "merge"])
def test_autograd_matches_finite_differences(fn_name, rng):
    n = 8
    if fn_name == "translate":
        shift = torch.tensor([[0.3, -1.6]], dtype=torch.float64)
        x = torch.from_numpy(rng.normal(size=(1, n, n))).requires_grad_()
        fn = lambda t: physics.translate(t, shift)  # noqa: E731
    elif fn_name == "extract":
        centres = torch.tensor([[6.3, 5.7], [7.5, 8.25]], dtype=torch.float64)
        x = torch.from_numpy(rng.normal(size=(14, 14)) + 1j * rng.normal(size=(14, 14)))
        x.requires_grad_()
        fn = lambda t: physics.extract_patches(t, centres, 6)  # noqa: E731
    elif fn_name == "amplitude":
        x = torch.from_numpy(rng.normal(size=(1, n, n)) + 1j * rng.normal(size=(1, n, n)))
        x.requires_grad_()
        fn = physics.far_field_amplitude
    else:
        offsets = torch.tensor([[[-1.5, -1.0], [1.5, -1.0], [-1.5, 1.0], [1.5, 1.0]]],
                               dtype=torch.float64)
        mask = torch.zeros(n, n, dtype=torch.float64)
        mask[2:6, 2:6] = 1
        x = torch.from_numpy(rng.normal(size=(1, 4, n, n)) + 1j * rng.normal(size=(1, 4, n, n)))
        x.requires_grad_()
        fn = lambda t: physics.merge_and_reextract(t, offsets, mask)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,), eps=1e-6, atol=1e-5)


def test_simulated_data_is_the_forward_model_of_the_true_object(small_scan):
    """Noise-free data / |F(O P_n)| is one constant: simulation and model share physics."""
    probe = torch.from_numpy(small_scan["probe"])
    fwd = physics.ForwardModel(probe)
    patches = physics.extract_patches(torch.from_numpy(small_scan["object"]),
                                      torch.from_numpy(small_scan["xy"]), 32)
    model_amp = torch.sqrt(fwd(patches[:, None]))[:, 0].double().numpy()
    data = small_scan["diffraction"].astype(np.float64)
    bright = model_amp > 0.05 * model_amp.max()
    ratio = data[bright] / model_amp[bright]
    assert np.std(ratio) / np.mean(ratio) < 1e-3
    assert not math.isclose(np.mean(ratio), 0.0)
