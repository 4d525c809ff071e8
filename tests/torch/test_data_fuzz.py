"""The loader either returns a valid scan or raises DataContractError: never anything else."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ptycho_torch.data import DataContractError, load_scan
from tests.conftest import write_random_stub

DTYPES = [np.float32, np.float64, np.uint16, np.int32, np.complex64, np.bool_]


@st.composite
def npz_payloads(draw):
    arrays = {}
    for key in ("diffraction", "probeGuess", "xcoords", "ycoords", "objectGuess"):
        if draw(st.booleans()) or key in ("diffraction", "probeGuess"):
            ndim = draw(st.integers(0, 4))
            shape = tuple(draw(st.integers(0, 6)) for _ in range(ndim))
            dtype = draw(st.sampled_from(DTYPES))
            fill = draw(st.sampled_from([0.0, 1.0, -1.0, np.nan, np.inf, 65535.0]))
            values = np.full(shape, fill if dtype != np.bool_ else 1)
            with np.errstate(invalid="ignore", over="ignore"):
                arrays[key] = values.astype(dtype)
    return arrays


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(payload=npz_payloads())
def test_random_npz_is_valid_or_clean_error(tmp_path, payload):
    path = tmp_path / "fuzz.npz"
    np.savez(path, **payload)
    try:
        scan = load_scan(path)
    except DataContractError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)
        return
    assert scan.diffraction.ndim == 3 and scan.diffraction.dtype == np.float32
    assert np.all(np.isfinite(scan.diffraction)) and np.all(scan.diffraction >= 0)
    assert scan.diffraction.shape[0] == scan.x.shape[0] == scan.y.shape[0] > 0


@pytest.mark.parametrize("damage", ["truncated", "empty", "npy_not_npz"])
def test_damaged_files_are_clean_errors(tmp_path, damage):
    path = tmp_path / "scan.npz"
    write_random_stub(path, n=6, big_n=16)
    if damage == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        buffer = io.BytesIO()
        np.save(buffer, np.zeros((6, 16, 16), np.float32))
        path.write_bytes(buffer.getvalue())
    with pytest.raises(DataContractError) as info:
        load_scan(path)
    assert str(path) in str(info.value)
