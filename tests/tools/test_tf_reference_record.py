"""tools/tf_reference_record.py end to end on a tiny scan with a tiny TF reference model.

Needs the TensorFlow reference (its package ``ptycho`` and TensorFlow); skipped where they
are missing, as in our CI. Run it with the reference environment's Python and this
checkout on the path, e.g.::

    PYTHONPATH=. /path/to/tf-venv/bin/python -m pytest tests/tools -q

The producer and the reference's training run as subprocesses of that same Python.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tools" / "tf_reference_record.py"
N, GRIDSIZE, NPHOTONS = 64, 2, 1e6
STAGES = {"input_raw", "input_normalized", "object_amplitude", "object_phase",
          "predicted_amplitude"}
RECORD_KEYS = {"stage_name", "batch_idx", "step", "global_mean", "global_std",
               "var_zero_mean", "mean_input_scale", "physics_scale", "stages"}
STAGE_KEYS = {"n_patches", "global_mean", "global_std", "var_zero_mean", "min", "max",
              "per_patch", "running_min", "running_max"}
PER_PATCH_KEYS = {"mean", "var", "var_zero_mean", "min", "max"}


def _no_reference_reason() -> str | None:
    """Why the reference cannot run here (None when it can)."""
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        return "TensorFlow is not installed"
    try:
        import ptycho.model_manager  # noqa: F401  (the reference's own module)
    except ImportError:
        return "the TensorFlow reference package 'ptycho' is not importable"
    import ptycho

    if REPO in Path(ptycho.__file__).resolve().parents:
        return f"'ptycho' resolves inside this repository ({ptycho.__file__})"
    return None


# import only in a subprocess-free check: cheap skip in CI (no TensorFlow at all)
pytest.importorskip("tensorflow", reason="TensorFlow reference environment not installed")
pytest.importorskip("ptycho.model_manager",
                    reason="the TensorFlow reference package 'ptycho' is not importable")
_REASON = _no_reference_reason()
if _REASON:
    pytest.skip(_REASON, allow_module_level=True)

pytestmark = pytest.mark.slow


def _reference_train_script() -> Path:
    import ptycho

    script = Path(ptycho.__file__).resolve().parent.parent / "scripts" / "training" / "train.py"
    if not script.is_file():
        pytest.skip(f"the reference's training script is missing: {script}")
    return script


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PTYCHO_DISABLE_MEMOIZE"] = "1"  # the reference would cache under ./memoized_data
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return env


def _run(args: list, cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    """A tiny simulated scan (N 64, ~100 positions), a 1-epoch reference model trained on
    its train half, and the producer's output on its test half."""
    from ptycho_torch.simulate import simulate_scan, split_scan

    root = tmp_path_factory.mktemp("tf_reference")
    scan = simulate_scan(n_images=96, patch_size=N, noise="poisson", n_photons=NPHOTONS,
                         object_name="camera_moon", seed=0)
    files = {}
    for name, arrays in split_scan(scan).items():
        files[name] = root / f"{name}.npz"
        np.savez(files[name], **arrays)
    n_train = int(np.load(files["train"])["diffraction"].shape[0])
    model_dir = root / "tf_model"
    train = _run([_reference_train_script(), "--backend", "tensorflow",
                  "--train_data_file", files["train"], "--output_dir", model_dir,
                  "--gridsize", GRIDSIZE, "--n_groups", 8, "--n_subsample", n_train,
                  "--batch_size", 4, "--nepochs", 1, "--nphotons", NPHOTONS,
                  "--nll_weight", 1.0, "--mae_weight", 0.0], cwd=root)
    assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
    assert (model_dir / "wts.h5.zip").is_file()
    out_dir = root / "record"
    produced = _run([SCRIPT, "--model-dir", model_dir, "--scan", files["test"],
                     "--train-scan", files["train"], "--output-dir", out_dir,
                     "--patch-stats-limit", 2, "--record-groups", 8, "--batch-groups", 4],
                    cwd=root)
    assert produced.returncode == 0, produced.stdout[-3000:] + produced.stderr[-3000:]
    return {"root": root, "files": files, "model_dir": model_dir, "out": out_dir,
            "stdout": produced.stdout}


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def test_record_structure_and_parity_keys(tiny):
    record = json.loads((tiny["out"] / "reference_record.json").read_text())
    assert record["format"] == "ptycho-reference-record" and record["format_version"] == 1
    producer = record["producer"]
    assert producer["implementation"] == "tensorflow"
    assert producer["script"] == "tools/tf_reference_record.py"
    assert {"tensorflow", "keras"} <= set(producer["version"]) and producer["commit"]
    assert isinstance(producer["settings"], dict)
    params = record["params"]
    assert params["N"] == N and params["gridsize"] == GRIDSIZE
    assert params["batch"] == 4 and params["epochs"] == 1 and params["groups"] == 8
    assert params["nphotons"] == pytest.approx(NPHOTONS)
    test_file = tiny["files"]["test"]
    assert record["scan"]["file"] == test_file.name
    assert record["scan"]["sha256"] == hashlib.sha256(test_file.read_bytes()).hexdigest()

    names = [(r["stage_name"], r["batch_idx"]) for r in record["records"]]
    assert names == [("train", 0), ("train", 1), ("inference", 0), ("inference", 1)]
    physics = math.sqrt(NPHOTONS) / (N / 2)
    for rec in record["records"]:
        assert set(rec) == RECORD_KEYS, set(rec) ^ RECORD_KEYS
        assert isinstance(rec["step"], int)
        for key in RECORD_KEYS - {"stage_name", "batch_idx", "step", "stages"}:
            assert _finite(rec[key]), (rec["stage_name"], key, rec[key])
        assert rec["physics_scale"] == pytest.approx(physics, rel=1e-5)
        assert 0 < rec["mean_input_scale"] < 1
        assert set(rec["stages"]) == STAGES
        groups = 4 if rec["stage_name"] == "train" else 8
        for stage, stats in rec["stages"].items():
            assert set(stats) == STAGE_KEYS, (stage, set(stats) ^ STAGE_KEYS)
            assert stats["n_patches"] == groups * GRIDSIZE**2
            assert set(stats["per_patch"]) == PER_PATCH_KEYS
            for values in stats["per_patch"].values():
                assert len(values) == stats["n_patches"]
                assert all(_finite(v) for v in values)
            for key in STAGE_KEYS - {"n_patches", "per_patch"}:
                assert _finite(stats[key]), (stage, key)
            assert stats["min"] <= stats["global_mean"] <= stats["max"]
            assert stats["running_min"] <= stats["min"] and stats["running_max"] >= stats["max"]
        # record-level summary is the object amplitude's, as in ptycho_torch
        amp = rec["stages"]["object_amplitude"]
        assert rec["var_zero_mean"] == amp["var_zero_mean"]
        assert rec["global_mean"] == amp["global_mean"] and amp["min"] >= 0
        # the network input is the raw amplitude times the reference's normalization
        raw, norm = rec["stages"]["input_raw"], rec["stages"]["input_normalized"]
        assert norm["global_mean"] == pytest.approx(rec["mean_input_scale"]
                                                    * raw["global_mean"], rel=1e-4)
        phase = rec["stages"]["object_phase"]
        assert -math.pi - 1e-5 <= phase["min"] <= phase["max"] <= math.pi + 1e-5
    # ptycho_torch's bare list of records is exactly the "records" field
    assert isinstance(record["records"], list)


def test_reconstruction_in_object_frame(tiny):
    record = json.loads((tiny["out"] / "reference_record.json").read_text())
    assert record["reconstruction"]["file"] == "reconstruction.npz"
    object_guess = np.load(tiny["files"]["test"])["objectGuess"]
    with np.load(tiny["out"] / "reconstruction.npz") as rec:
        obj, weight = rec["object"], rec["weight"]
        assert obj.dtype == np.complex64 and weight.dtype == np.float32
        assert obj.shape == object_guess.shape == weight.shape
        assert np.isfinite(obj).all() and np.isfinite(weight).all()
        covered = weight > 0
        assert covered.mean() > 0.05
        assert np.all(obj[~covered] == 0)
        assert np.abs(obj[covered]).mean() > 0
        np.testing.assert_allclose(rec["amplitude"], np.abs(obj), rtol=1e-6)
    assert (tiny["out"] / "reconstruction.png").stat().st_size > 0
    assert "inference batch 0" in tiny["stdout"]


@pytest.mark.parametrize("extra, message", [
    (["--batch-groups", "16"], "merge fault"),
    (["--patch-stats-limit", "0"], "must be >= 1"),
])
def test_bad_input_one_line_exit_2_nothing_written(tiny, tmp_path, extra, message):
    out_dir = tmp_path / "never"
    result = _run([SCRIPT, "--model-dir", tiny["model_dir"], "--scan", tiny["files"]["test"],
                   "--output-dir", out_dir, *extra], cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert result.stdout == "" and not out_dir.exists()


def test_missing_bundle_is_a_usage_error(tiny, tmp_path):
    out_dir = tmp_path / "never"
    result = _run([SCRIPT, "--model-dir", tiny["root"], "--scan", tiny["files"]["test"],
                   "--output-dir", out_dir], cwd=tmp_path, timeout=120)
    assert result.returncode == 2 and "wts.h5.zip" in result.stderr
    assert not out_dir.exists()


def test_inference_groups_are_the_recorded_patterns(tiny):
    """inference_groups.npy names the patterns of the inference records, in order: the
    first record's raw input statistics are those of exactly these patterns."""
    record = json.loads((tiny["out"] / "reference_record.json").read_text())
    groups = np.load(tiny["out"] / record["inference_groups"]["file"])
    assert groups.dtype == np.int64 and list(groups.shape) == record["inference_groups"]["shape"]
    assert groups.shape[1] == GRIDSIZE * GRIDSIZE
    first = next(r for r in record["records"] if r["stage_name"] == "inference")
    n_groups = first["stages"]["input_raw"]["n_patches"] // groups.shape[1]
    diffraction = np.load(tiny["files"]["test"])["diffraction"].astype(np.float64)
    patches = diffraction[groups[:n_groups]].reshape(-1, N * N)
    np.testing.assert_allclose(first["stages"]["input_raw"]["per_patch"]["mean"],
                               patches.mean(axis=1)[:len(first["stages"]["input_raw"][
                                   "per_patch"]["mean"])], rtol=1e-5)
