"""python -m bench.gpu_check --smoke: the GPU acceptance's code, run on the CPU at tiny sizes,
so that it cannot rot between the rare GPU sessions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import gpu_check, no_cost

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_smoke_runs_every_section_and_writes_one_table(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    done = subprocess.run([sys.executable, "-m", "bench.gpu_check", "--smoke", "--out",
                           str(out), "--work", str(work)], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (md,) = out.glob("*-cpu-gpu-check-smoke.md")
    result = json.loads(md.with_suffix(".json").read_text())
    assert result["mode"] == "smoke" and result["device"] == "cpu"
    assert md.read_text() in done.stdout  # the table printed is the table written
    verdicts = {row["check"]: row["verdict"] for row in result["rows"]}
    assert not {v for v in verdicts.values()} & {gpu_check.FAIL, gpu_check.ERROR}, verdicts

    def verdict(prefix: str) -> list[str]:
        found = [v for check, v in verdicts.items() if check.startswith(prefix)]
        assert found, f"no row starts with {prefix!r}: {list(verdicts)}"
        return found

    # what runs the same on a CPU passes for real
    assert verdict("baseline: train") == [gpu_check.PASS]
    assert verdict("baseline: inference") == [gpu_check.PASS]
    assert verdict("baseline train run: numerics tags") == [gpu_check.PASS]
    assert verdict("determinism: training twice") == [gpu_check.PASS]
    assert verdict("determinism: inference twice") == [gpu_check.PASS]
    assert verdict("DDP:") == [gpu_check.PASS]
    # what needs a GPU says so instead of pretending
    assert verdict("baseline train run: GPU system metrics") == [gpu_check.NA_CPU]
    assert set(verdict("no cost when off")) == {gpu_check.NA_CPU}
    assert verdict("tracking's cost") == [gpu_check.NA_CPU]
    assert set(verdict("training step")) == {gpu_check.NA_CPU}
    assert verdict("inference incl. stitching") == [gpu_check.NA_CPU]
    assert verdict("pytest -m gpu") == [gpu_check.NA_CPU]
    assert result["details"]["pytest_gpu"]["counts"].get("skipped", 0) >= 1
    # the store holds the baseline's parent, train and inference runs, and the DDP run
    assert (work / "mlruns" / "mlflow.db").is_file()
    assert result["details"]["baseline"]["steps"]["train"] > 0


def test_a_missing_package_is_named_before_anything_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(gpu_check, "CARRIED", (*gpu_check.CARRIED, "no-such-package-gpu-check"))
    code = gpu_check.main(["--smoke", "--out", str(tmp_path / "out"), "--work",
                           str(tmp_path / "work")])
    assert code == 2
    assert "no-such-package-gpu-check: not installed" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (tmp_path / "work").exists()


def test_the_carried_packages_are_satisfied_here():
    # the project's own environment has everything a tracked run needs, at fitting versions
    assert gpu_check.missing_packages() == []


def test_unknown_section_is_a_usage_error(tmp_path):
    with pytest.raises(SystemExit) as exc:
        gpu_check.main(["--smoke", "--out", str(tmp_path), "--sections", "baseline,nope"])
    assert exc.value.code == 2


def _memory(allocations: int, peak: int) -> dict:
    return {"allocated_at_start": 1024, "allocations": allocations, "requested_total": 4096,
            "requested_peak": 2048, "max_memory_allocated": peak}


def _no_cost_result(off_peak: int) -> dict:
    """bench.no_cost.measure's result as a GPU gives it (figures made up, shape real)."""
    plain = {"warmup_seconds": 0.010, "measured_seconds": 0.015, "records": 0,
             "warmup": _memory(40, 2**21), "measured": _memory(60, 2**21)}
    runs = {"uninstrumented": plain, "off": {**plain, "measured": _memory(60, off_peak)},
            "past limit": {**plain, "warmup_seconds": 0.030, "records": 2,
                           "warmup": _memory(90, 2**22)},
            "off again": plain}
    result = {"limit": 2, "patch": 64, "train_batch": 4, "inference_batch": 32,
              "train": runs, "inference": runs}
    for part in ("train", "inference"):
        result[f"{part}_instrumented_cost"] = no_cost.instrumented_cost(
            runs["past limit"], plain, 2, 3)
    return result


def test_no_cost_rows_on_a_gpu_pass_on_equal_figures_and_name_a_difference(tmp_path):
    check = gpu_check.Check("cuda", gpu_check.FULL, tmp_path)
    gpu_check.no_cost_rows(check, _no_cost_result(off_peak=2**21))
    rows = {row["check"]: row for row in check.rows}
    equal = [row for name, row in rows.items() if name.startswith("no cost when off")]
    assert [row["verdict"] for row in equal] == [gpu_check.PASS, gpu_check.PASS]
    assert equal[0]["measured"] == "60 allocations, peak 2.0 MiB in all variants"
    cost = [row for name, row in rows.items() if name.startswith("patch stats on")]
    # 30 ms - 2 x 5 ms against 10 ms - 2 x 5 ms; 50 more allocations, 2 MiB more peak
    assert cost[0]["measured"] == "+20 ms, +50 allocations, peak +2.0 MiB"

    check = gpu_check.Check("cuda", gpu_check.FULL, tmp_path)
    gpu_check.no_cost_rows(check, _no_cost_result(off_peak=2**21 + 512))
    failed = [row for row in check.rows if row["verdict"] == gpu_check.FAIL]
    assert len(failed) == 2
    assert failed[0]["measured"] == f"off: max_memory_allocated {2**21 + 512} vs {2**21}"


def test_a_used_work_folder_is_refused(tmp_path):
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "old.txt").write_text("a previous run")
    with pytest.raises(SystemExit) as exc:
        gpu_check.main(["--smoke", "--out", str(tmp_path / "out"), "--work",
                        str(tmp_path / "work")])
    assert exc.value.code == 2 and not (tmp_path / "out").exists()


def test_parts_past_the_time_budget_do_not_start_and_say_so(tmp_path):
    code = gpu_check.main(["--smoke", "--out", str(tmp_path), "--sections", "pytest,compile",
                           "--budget-s", "0"])
    assert code == 1  # a part of the acceptance that did not run is not a pass
    (json_file,) = tmp_path.glob("*.json")
    rows = json.loads(json_file.read_text())["rows"]
    assert [(row["check"], row["verdict"]) for row in rows] == [
        ("pytest", gpu_check.ERROR), ("compile", gpu_check.NA_OPTIONAL)]
    assert all(row["measured"].startswith("not started") for row in rows)
