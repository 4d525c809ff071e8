"""Shared fixtures: a seeded generator, a small exact simulated scan, NPZ stub writers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ptycho_torch.simulate import simulate_scan, split_scan


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True)
def _seed_torch():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def small_scan() -> dict:
    """Noise-free scan: 64 positions, N = 32, camera/moon object, seed 0."""
    return simulate_scan(n_images=64, patch_size=32, noise="none", object_name="camera_moon",
                         seed=0)


@pytest.fixture(scope="session")
def small_files(tmp_path_factory, small_scan) -> dict:
    """train.npz and test.npz of the small scan, written as the simulate CLI does."""
    folder = tmp_path_factory.mktemp("small_scan")
    paths = {}
    for name, arrays in split_scan(small_scan).items():
        paths[name] = folder / f"{name}.npz"
        np.savez(paths[name], **arrays)
    return paths


def write_random_stub(path, n: int = 10, big_n: int = 32, seed: int = 0, **overrides) -> None:
    """Random NPZ in the contract format: n positions in [0, 1], random amplitudes."""
    rng = np.random.default_rng(seed)
    probe = (rng.random((big_n, big_n)) + 0.5).astype(np.complex64)
    arrays = {
        "diffraction": rng.random((n, big_n, big_n)).astype(np.float32),
        "probeGuess": probe,
        "xcoords": rng.random(n),
        "ycoords": rng.random(n),
        "_metadata": np.array(json.dumps({"nphotons": 1e6})),
    }
    arrays.update(overrides)
    arrays = {key: value for key, value in arrays.items() if value is not None}
    np.savez(path, **arrays)
