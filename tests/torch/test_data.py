"""Data contract: loading, validation, normalization and grouping."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from ptycho_torch.config import DataConfig
from ptycho_torch.data import (
    DataContractError,
    PtychoDataModule,
    build_groups,
    compute_norm_factor,
    load_scan,
    resolve_nphotons,
)
from tests.conftest import write_random_stub


def test_valid_stub_loads(tmp_path):
    path = tmp_path / "scan.npz"
    write_random_stub(path, n=10, big_n=16)
    scan = load_scan(path)
    assert scan.diffraction.shape == (10, 16, 16)
    assert scan.diffraction.dtype == np.float32
    assert scan.probe.dtype == np.complex64
    assert scan.metadata == {"nphotons": 1e6}
    np.testing.assert_array_equal(scan.x_start, scan.x)
    np.testing.assert_array_equal(scan.scan_index, np.zeros(10))


def test_diff3d_alias_and_legacy_layout_transposed_with_warning(tmp_path, caplog):
    rng = np.random.default_rng(0)
    stack = rng.random((5, 16, 16)).astype(np.float32)
    path = tmp_path / "legacy.npz"
    write_random_stub(path, n=5, big_n=16, diffraction=None,
                      diff3d=np.transpose(stack, (1, 2, 0)))
    with caplog.at_level(logging.WARNING):
        scan = load_scan(path)
    assert "legacy layout" in caplog.text
    np.testing.assert_array_equal(scan.diffraction, stack)


def test_uint16_counts_do_not_overflow(tmp_path):
    counts = np.full((4, 16, 16), 60000, dtype=np.uint16)
    path = tmp_path / "counts.npz"
    write_random_stub(path, n=4, big_n=16, diffraction=counts)
    scan = load_scan(path)
    factor = compute_norm_factor(scan.diffraction)
    expected = np.sqrt(64 / (256 * 60000.0**2))
    assert factor == pytest.approx(expected, rel=1e-12)


def test_pickled_object_array_is_refused_not_unpickled(tmp_path):
    path = tmp_path / "pickled.npz"
    write_random_stub(path, n=4, big_n=16,
                      _metadata=np.array([{"nphotons": 1}], dtype=object))
    with pytest.raises(DataContractError, match="_metadata.*pickled"):
        load_scan(path)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"probeGuess": None}, "probeGuess.*missing"),
        ({"diffraction": None}, "diff3d.*missing"),
        ({"xcoords": np.zeros(9)}, "ycoords.*length"),
        ({"diffraction": np.zeros((10, 16), np.float32)}, "diffraction.*shape"),
        ({"diffraction": np.full((10, 16, 16), np.nan, np.float32)}, "NaN or Inf"),
        ({"diffraction": -np.ones((10, 16, 16), np.float32)}, "negative"),
        ({"diffraction": np.ones((10, 16, 16), np.complex64)}, "complex"),
        ({"probeGuess": np.ones((16, 12), np.complex64)}, "square"),
        ({"probeGuess": np.ones((8, 8), np.complex64)}, "do not match probe"),
        ({"_metadata": np.array("{not json")}, "_metadata.*JSON"),
    ],
)
def test_contract_violations_name_file_and_key(tmp_path, overrides, match):
    path = tmp_path / "bad.npz"
    write_random_stub(path, n=10, big_n=16, **overrides)
    with pytest.raises(DataContractError, match=match) as info:
        load_scan(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_not_an_npz_and_directory_and_missing(tmp_path):
    text = tmp_path / "notes.npz"
    text.write_text("hello")
    with pytest.raises(DataContractError, match="not .*NPZ"):
        load_scan(text)
    with pytest.raises(DataContractError, match="not a file"):
        load_scan(tmp_path)
    with pytest.raises(DataContractError, match="does not exist"):
        load_scan(tmp_path / "absent.npz")


def test_nphotons_resolution_order(tmp_path):
    path = tmp_path / "scan.npz"
    write_random_stub(path, n=10, big_n=16, _metadata=None)
    scan = load_scan(path)
    counts = np.mean(np.sum(scan.diffraction.astype(np.float64) ** 2, axis=(1, 2)))
    assert resolve_nphotons(scan, None) == pytest.approx(counts)
    assert resolve_nphotons(scan, 5.0) == 5.0
    scan.metadata["nphotons"] = 1e7
    assert resolve_nphotons(scan, None) == 1e7


def test_norm_factor_gives_reference_energy(rng):
    x = rng.random((7, 16, 16)).astype(np.float32) * 100
    normalized = x * compute_norm_factor(x)
    assert np.mean(np.sum(normalized.astype(np.float64) ** 2, axis=(1, 2))) == pytest.approx(64.0)


def test_groups_are_nearest_neighbours_seeded_and_grid_ordered(rng):
    gx, gy = np.meshgrid(np.arange(6) * 10.0, np.arange(6) * 10.0)
    x, y = gx.ravel(), gy.ravel()
    groups = build_groups(x, y, gridsize=2, n_neighbors=4, n_groups=20, seed=3)
    again = build_groups(x, y, gridsize=2, n_neighbors=4, n_groups=20, seed=3)
    np.testing.assert_array_equal(groups, again)
    assert groups.shape == (20, 4)
    for members in groups:
        assert len(set(members)) == 4
        spread = np.hypot(x[members] - x[members].mean(), y[members] - y[members].mean())
        assert spread.max() <= 10.0 * np.sqrt(2) + 1e-9
        # row-major: channels 0, 1 are the top row (smaller y) of the 2x2 group
        assert max(y[members[:2]]) <= min(y[members[2:]])


def test_too_few_points_and_too_many_groups_are_clear_errors():
    x = np.arange(3.0)
    with pytest.raises(DataContractError, match="needs at least 4"):
        build_groups(x, x, gridsize=2, n_neighbors=4, n_groups=None, seed=0)
    with pytest.raises(DataContractError, match="exceeds the 3 groups"):
        build_groups(x, x, gridsize=1, n_neighbors=4, n_groups=5, seed=0)


def test_ten_random_points_make_a_datamodule_at_gridsize_2(tmp_path):
    path = tmp_path / "tiny.npz"
    write_random_stub(path, n=10, big_n=16)
    module = PtychoDataModule(load_scan(path), DataConfig(patch_size_px=16, gridsize=2),
                              batch_size=4)
    batch = next(iter(module.train_dataloader()))
    assert batch["diffraction"].shape[1:] == (4, 16, 16)
    assert batch["offsets"].shape[1:] == (4, 2)
    assert len(module.train_indices) + len(module.val_indices) == 10
