"""tools/side_by_side.py on a real small scan: the truth itself scores perfectly, a noisy copy
worse, and a reconstruction in another frame is a one-line error."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from ptycho_torch.data import load_scan
from tools import side_by_side


@pytest.fixture
def truth_and_noisy(small_files, tmp_path):
    truth = load_scan(small_files["test"]).object_guess
    weight = np.zeros(truth.shape, np.float32)
    weight[8:-8, 8:-8] = 1.0
    rng = np.random.default_rng(0)
    noisy = truth * (1 + 0.3 * rng.standard_normal(truth.shape))
    paths = {}
    for name, obj in (("exact", truth), ("noisy", noisy)):
        paths[name] = tmp_path / f"{name}.npz"
        np.savez(paths[name], object=obj.astype(np.complex64), weight=weight)
    return paths


def test_scores_and_picture(small_files, truth_and_noisy, tmp_path, capsys):
    out = tmp_path / "fig" / "side.png"
    assert side_by_side.main(["--scan", str(small_files["test"]), "--reconstruction",
                              f"exact={truth_and_noisy['exact']}", "--reconstruction",
                              f"noisy={truth_and_noisy['noisy']}", "--output", str(out)]) == 0
    scores = json.loads(out.with_suffix(".json").read_text())
    assert scores["exact"]["amp_ssim"] == pytest.approx(1.0, abs=1e-6)
    assert scores["exact"]["phase_rms_rad"] == pytest.approx(0.0, abs=1e-5)
    assert scores["noisy"]["amp_ssim"] < 0.9
    with Image.open(out) as image:
        assert image.format == "PNG" and image.height > 3 * 300  # truth + two rows
    assert "exact: amp_ssim=1.0000" in capsys.readouterr().out


def test_reconstruction_in_another_frame_is_exit_2(small_files, tmp_path, capsys):
    path = tmp_path / "small.npz"
    np.savez(path, object=np.ones((5, 5), np.complex64), weight=np.ones((5, 5), np.float32))
    out = tmp_path / "side.png"
    assert side_by_side.main(["--scan", str(small_files["test"]), "--reconstruction",
                              f"x={path}", "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not in the scan's object frame" in err[0]
    assert not out.exists()
