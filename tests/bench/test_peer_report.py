"""bench.peer's record and report without pty-chi: a hand-made PeerReport judged, rendered,
written as JSON (dataclasses.asdict) and drawn."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench.peer.record import (
    Checkpoint,
    Convergence,
    DataInfo,
    Env,
    HalfWay,
    MethodResult,
    ModelInfo,
    OursResult,
    PeerReport,
    PtychiSection,
    Reach,
    Timing,
    build_target,
    build_verdict,
)
from bench.peer.report import render_markdown, write_report

METRIC_KEYS = ("amp_ssim", "phase_ssim", "amp_psnr", "phase_psnr", "amp_frc50", "phase_frc50")


def _metrics(amp_ssim: float, phase_ssim: float) -> dict[str, float]:
    return {**dict.fromkeys(METRIC_KEYS, 1.0), "amp_ssim": amp_ssim, "phase_ssim": phase_ssim}


def _method(seconds: float, amp_ssim: float, phase_ssim: float) -> MethodResult:
    checkpoints = [Checkpoint(iteration=1, seconds=seconds / 4, metrics=_metrics(0.3, 0.2)),
                   Checkpoint(iteration=4, seconds=seconds, metrics=_metrics(amp_ssim,
                                                                             phase_ssim))]
    return MethodResult(
        loss=[8.0, 4.0, 2.0, 1.9], checkpoints=checkpoints, seconds=seconds, build_s=0.01,
        iterations=4, metrics=checkpoints[-1].metrics,
        convergence=Convergence(final_loss=1.9, window=2, relative_drop_last_window=0.05,
                                final_over_noise_floor=1.9, tolerance=0.005, flat=False),
        half_way=HalfWay(iteration=1, amp_ssim=0.3, phase_ssim=0.2))


def _report() -> PeerReport:
    ours = OursResult(crop=4, seconds=[0.02, 0.01, 0.03], median_s=0.02, n_groups=9,
                      n_patterns=36, gridsize=2, n_filters_scale=1, metrics=_metrics(0.8, 0.7))
    methods = {"ePIE": _method(3.0, 0.82, 0.74), "LSQML": _method(1.0, 0.9, 0.9)}
    targets = {"ePIE": build_target(methods["ePIE"], ours, Reach(iteration=4, seconds=3.0)),
               "LSQML": build_target(methods["LSQML"], ours, None)}
    return PeerReport(
        date="2026-01-02", device="cpu", command="python -m bench.peer --epie-iters 4",
        data=DataInfo(test="test.npz", n_patterns=36, patch_size=16, nphotons=1e6,
                      overlap=0.65, object_shape=[24, 24], metadata={"seed": 0}),
        model=ModelInfo(dir="model", how="given with --model-dir"),
        scored_box=[[4, 20], [5, 19]], timing=Timing(), ours=ours, noise_floor_loss=1.0,
        ptychi=PtychiSection(batch_size=8, epie_alpha=1.0, lsqml_noise="gaussian",
                             convergence_window=2, convergence_tolerance=0.005,
                             methods=methods),
        targets=targets, verdict=build_verdict(targets, "cpu"),
        env=Env(torch="t", ptychi="p", threads=1, machine="m", python="3"))


def test_targets_and_verdict():
    report = _report()
    epie, lsqml = report.targets["ePIE"], report.targets["LSQML"]
    assert epie.amp_ssim_gap == pytest.approx(0.02) and epie.within_0_05_ssim
    assert epie.speed_ratio == pytest.approx(150.0) and epie.at_least_100x_faster
    assert lsqml.phase_ssim_gap == pytest.approx(0.2) and not lsqml.within_0_05_ssim
    assert lsqml.speed_ratio == pytest.approx(50.0) and not lsqml.at_least_100x_faster
    assert report.verdict.count("NOT MET") == 2
    assert report.scored_slices() == (slice(4, 20), slice(5, 19))


def test_markdown_reads_every_table_from_the_record():
    table = render_markdown(_report())
    assert "| pty-chi ePIE | 4 | 3 | 0.8200 | 0.7400 |" in table
    assert "| ours (PtychoPINN) | 1 pass | 0.02 | 0.8000 | 0.7000 |" in table
    assert "| LSQML | 4 | 1.9000 | 1.900 | 5.00e-02 | NO | 0.3000, 0.2000 (iteration 1) |" in table
    assert "| ePIE | +0.0200 | +0.0400 | yes | 150x | yes | iteration 4, 3 s (150x ours) |" \
        in table
    assert "never (within the run)" in table
    assert table.endswith("Command: `python -m bench.peer --epie-iters 4`\n")


def test_written_json_is_the_record_as_dicts_and_figures_are_drawn(tmp_path, rng):
    report = _report()
    gt = np.exp(1j * rng.uniform(-1, 1, (24, 24))).astype(np.complex64)
    objects = {"ours": gt * 0.9, "pty-chi ePIE": gt, "pty-chi LSQML": gt * 1.1}
    stem = tmp_path / "out" / "2026-01-02-cpu-peer"
    markdown = write_report(stem, report, gt, objects)
    written = json.loads(stem.with_suffix(".json").read_text())
    assert written == json.loads(json.dumps(report.to_json()))
    assert list(written) == ["date", "device", "command", "data", "model", "scored_box",
                             "timing", "ours", "noise_floor_loss", "ptychi", "targets",
                             "verdict", "env"]
    epie = written["ptychi"]["methods"]["ePIE"]
    assert epie["checkpoints"][1] == {"iteration": 4, "seconds": 3.0,
                                      "metrics": _metrics(0.82, 0.74)}
    assert epie["convergence"]["flat"] is False
    assert written["targets"]["ePIE"]["reaches_our_ssim"] == {"iteration": 4, "seconds": 3.0}
    assert written["targets"]["LSQML"]["reaches_our_ssim"] is None
    assert written["ptychi"]["object_init"] == "ones"
    assert stem.with_suffix(".md").read_text() == markdown
    for png in (stem.with_suffix(".png"), tmp_path / "out" / f"{stem.name}-convergence.png"):
        assert png.stat().st_size > 10_000
