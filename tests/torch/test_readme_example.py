"""The README's notebook-style library session, run exactly as written."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_example() -> str:
    text = README.read_text()
    match = re.search(r"<!-- library-example:start -->\n```python\n(.*?)```\n"
                      r"<!-- library-example:end -->", text, re.S)
    assert match, "README lost its library-example block"
    return match.group(1)


def test_readme_library_example_runs_as_written(tmp_path):
    script = tmp_path / "example.py"
    script.write_text(readme_example())
    env = dict(os.environ, MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("data/train.npz", "data/test.npz", "model/model.pt", "model/config.json",
                 "reconstruction/reconstruction.npz", "reconstruction/reconstruction.png",
                 "reconstruction/metrics.json", "object.png"):
        assert (tmp_path / name).is_file(), name
    metrics = json.loads((tmp_path / "reconstruction/metrics.json").read_text())
    # Two epochs on a small scan: a real but rough reconstruction, scored against the truth.
    assert 0.0 < metrics["amp_ssim"] <= 1.0 and 0.0 < metrics["phase_ssim"] <= 1.0
    # What the example prints is what it saved.
    assert f"'amp_ssim': {metrics['amp_ssim']!r}" in proc.stdout
