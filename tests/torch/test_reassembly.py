"""Stitching orientation: true patches stitch back to the ground truth; a mirrored,
transposed or shifted stitch fails the metrics."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ptycho_torch import physics
from ptycho_torch.config import DataConfig, ModelConfig
from ptycho_torch.data import build_grouped_scan, load_scan
from ptycho_torch.metrics import compute_metrics, global_phase_aligned
from ptycho_torch.reassembly import Stitcher, canvas_frame, covered_box, probe_weight
from ptycho_torch.workflows import evaluate, predict_and_stitch


class OracleModel(torch.nn.Module):
    """Stands in for the network: returns the true object patches of each group, so the test
    exercises grouping, positions and stitching, not learning. The dataset's diffraction is
    replaced by the group index so the oracle knows which group it sees."""

    def __init__(self, obj: np.ndarray, positions: torch.Tensor, n: int,
                 probe: np.ndarray | None = None):
        super().__init__()
        self.physics = SimpleNamespace(probe=None if probe is None else torch.from_numpy(probe))
        self.obj = torch.from_numpy(obj)
        self.positions = positions
        self.n = n

    def forward(self, diffraction, offsets, norm_factor):
        b, c = diffraction.shape[:2]
        idx = diffraction[:, 0, 0, 0].long()
        patches = physics.extract_patches(self.obj, self.positions[idx].reshape(-1, 2), self.n)
        obj = patches.reshape(b, c, self.n, self.n)
        return SimpleNamespace(object=obj)  # the one ForwardOutput field stitching reads


def _stitch_truth(path, gridsize, stitch_weight="crop"):
    scan = load_scan(path)
    grouped = build_grouped_scan(scan, DataConfig(patch_size_px=32, gridsize=gridsize))
    grouped.diffraction = torch.arange(len(grouped), dtype=torch.float32)[:, None, None, None] \
        .expand(-1, gridsize**2, 2, 2)
    oracle = OracleModel(scan.object_guess, grouped.positions, 32, scan.probe)
    shape, origin = canvas_frame(grouped.positions.reshape(-1, 2).numpy(), 32,
                                 scan.object_guess.shape)
    obj, weight = predict_and_stitch(oracle, grouped, shape, origin, "cpu", batch_size=8,
                                     crop=10, progress=False, stitch_weight=stitch_weight)
    return scan, obj, weight


@pytest.mark.parametrize("stitch_weight", ["crop", "probe"])
@pytest.mark.parametrize("gridsize", [1, 2])
def test_stitched_true_patches_match_ground_truth(small_files, gridsize, stitch_weight):
    scan, obj, weight = _stitch_truth(small_files["test"], gridsize, stitch_weight)
    metrics = evaluate(obj, weight, scan.object_guess, crop=10)
    # bilinear extract + place blurs a little (SSIM ~0.92 on this sharp object), never shifts
    assert metrics["amp_ssim"] > 0.9
    assert metrics["phase_ssim"] > 0.9
    assert metrics["amp_pearson"] > 0.97


@pytest.mark.parametrize("stitch_weight", ["crop", "probe"])
@pytest.mark.parametrize("transform", ["flip_x", "flip_y", "transpose", "shift_2px"])
def test_misoriented_stitch_fails(small_files, transform, stitch_weight):
    scan, obj, weight = _stitch_truth(small_files["test"], 1, stitch_weight)
    rows, cols = covered_box(weight, border=5)
    region = obj[rows, cols]
    if transform == "flip_x":
        bad = region[:, ::-1]
    elif transform == "flip_y":
        bad = region[::-1, :]
    elif transform == "transpose":
        side = min(region.shape)
        region = region[:side, :side]
        bad = region.T
    else:
        bad = np.roll(region, 2, axis=1)
    gt = scan.object_guess[rows, cols][: bad.shape[0], : bad.shape[1]]
    good = compute_metrics(region[: gt.shape[0], : gt.shape[1]], gt)
    wrong = compute_metrics(bad, gt)
    assert good["amp_ssim"] > 0.9
    assert wrong["amp_ssim"] < 0.6


def test_stitcher_places_a_bright_pixel_at_its_scan_position():
    patch = torch.zeros(1, 16, 16, dtype=torch.complex64)
    patch[0, 8, 8] = 1.0
    stitcher = Stitcher((40, 40), np.zeros(2), crop=6)
    stitcher.add(patch, torch.tensor([[25.0, 12.0]]))
    obj, weight = stitcher.result()
    assert np.unravel_index(np.abs(obj).argmax(), obj.shape) == (12, 25)
    assert weight[12, 25] == pytest.approx(1.0)
    assert weight.sum() == pytest.approx(36.0)


def test_probe_weighted_stitch_is_the_weighted_mean_of_overlapping_patches():
    n = 8
    weight_map = torch.rand(n, n, generator=torch.Generator().manual_seed(0)) + 0.1
    values = torch.tensor([1.0 + 2.0j, -3.0 + 0.5j])
    patches = values[:, None, None].expand(2, n, n).to(torch.complex64).clone()
    centres = torch.tensor([[10.0, 10.0], [13.0, 11.0]])  # integer: no interpolation
    stitcher = Stitcher((24, 24), np.zeros(2), crop=4, patch_weight=weight_map)
    stitcher.add(patches, centres)
    obj, coverage = stitcher.result()
    # canvas pixel (row 11, col 12) lies in both patches: patch-local (5, 6) and (4, 3)
    w1, w2 = weight_map[5, 6].item(), weight_map[4, 3].item()
    expected = (w1 * values[0] + w2 * values[1]) / (w1 + w2)
    assert obj[11, 12] == pytest.approx(complex(expected), rel=1e-5)
    # covered region is the crops' (4 x 4 each), whatever the weight map covers
    assert coverage.sum() == pytest.approx(32.0) and obj[coverage == 0].sum() == 0
    # where one patch alone reaches, its value comes back exactly
    assert obj[8, 8] == pytest.approx(complex(values[0]), rel=1e-6)


def test_probe_weight_is_normalized_intensity():
    probe = torch.tensor([[0.0, 2.0j], [1.0, -1.0]], dtype=torch.complex64)
    assert torch.allclose(probe_weight(probe), torch.tensor([[0.0, 1.0], [0.25, 0.25]]))


def test_model_config_rejects_bad_patch_size():
    with pytest.raises(ValueError, match="multiple of 8"):
        ModelConfig(patch_size_px=30)


def test_displayed_reconstruction_has_the_constant_phase_offset_removed_and_nothing_else():
    rng = np.random.default_rng(0)
    gt = (0.5 + rng.random((12, 20))) * np.exp(1j * rng.uniform(-1, 1, (12, 20)))
    pred = (gt * np.exp(1j * 2.4)).astype(np.complex64)  # a constant offset of 2.4 rad
    shown = global_phase_aligned(pred, gt.astype(np.complex64))
    assert shown.dtype == np.complex64
    np.testing.assert_allclose(shown, gt, atol=1e-5)
    np.testing.assert_allclose(np.abs(shown), np.abs(pred), rtol=1e-6)  # amplitude untouched
    # a phase ramp is not an offset: it stays (the picture shows what was reconstructed)
    ramp = np.exp(1j * 0.3 * np.arange(20))[None, :]
    tilted = global_phase_aligned((gt * ramp).astype(np.complex64), gt.astype(np.complex64))
    assert np.ptp(np.angle(tilted / gt)) > 3.0
