"""The peer comparison's markdown and figures, read from a :class:`PeerReport`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.common import write_results
from bench.peer.ptychi import METHODS
from bench.peer.record import PeerReport, Target

TABLE_HEAD = ("| method | iterations | wall time s | amp SSIM | phase SSIM | amp PSNR | "
              "phase PSNR | FRC50 amp | FRC50 phase | time / ours |\n"
              "|---|---|---|---|---|---|---|---|---|---|")
SSIM_KEYS = (("amp_ssim", "-"), ("phase_ssim", "--"))  # and their line styles


def table_row(name: str, iterations: str, seconds: float, m: dict, ratio: float) -> str:
    return (f"| {name} | {iterations} | {seconds:.3g} | {m['amp_ssim']:.4f} | "
            f"{m['phase_ssim']:.4f} | {m['amp_psnr']:.2f} | {m['phase_psnr']:.2f} | "
            f"{m['amp_frc50']:.3f} | {m['phase_frc50']:.3f} | {ratio:.3g}x |")


def _header(report: PeerReport) -> list[str]:
    data, ours, ptychi = report.data, report.ours, report.ptychi
    return [f"# Quality vs an iterative peer (pty-chi): {report.device} ({report.date})", "",
            f"- scan: `{data.test}`: {data.n_patterns} patterns, N {data.patch_size}, "
            f"{data.nphotons:g} photons/pattern, Poisson noise, overlap {data.overlap}, "
            f"object {data.object_shape}",
            f"- scored region (rows, cols): {report.scored_box} (our stitched coverage "
            "trimmed by half a stitch crop, as `ptycho_torch.inference` scores)",
            f"- ours: `{report.model.dir}` ({report.model.how}); gridsize {ours.gridsize}, "
            f"{ours.n_groups} groups; timed: {report.timing.ours}; median of "
            f"{len(ours.seconds)} repeats {[round(s, 3) for s in ours.seconds]}",
            f"- pty-chi {report.env.ptychi}: fixed known probe and positions, object from "
            f"ones, minibatch {ptychi.batch_size}; ePIE alpha {ptychi.epie_alpha}, LSQML "
            f"noise model {ptychi.lsqml_noise}; timed: {report.timing.ptychi}",
            f"- torch {report.env.torch}, Python {report.env.python}, {report.env.machine}"]


def _results_table(report: PeerReport) -> list[str]:
    ours = report.ours
    lines = ["", TABLE_HEAD,
             table_row("ours (PtychoPINN)", "1 pass", ours.median_s, ours.metrics, 1.0)]
    for method in METHODS:
        r = report.ptychi.methods[method]
        lines.append(table_row(f"pty-chi {method}", str(r.iterations), r.seconds, r.metrics,
                               r.seconds / ours.median_s))
    return lines


def _convergence_table(report: PeerReport) -> list[str]:
    ptychi = report.ptychi
    lines = ["", "## Convergence (data-fit loss: pty-chi's mean (sqrt I_pred - sqrt I_meas)^2)",
             "", f"Noise floor (true object through the simulator's forward model, best "
             f"scale): {report.noise_floor_loss:.4f}. Flat = relative loss decrease over "
             f"the last {ptychi.convergence_window} iterations below "
             f"{ptychi.convergence_tolerance:g}.", "",
             "| method | iterations | final loss | / noise floor | rel. drop, last window "
             "| flat | SSIM amp, phase at half the iterations |", "|---|---|---|---|---|---|---|"]
    for method in METHODS:
        r = ptychi.methods[method]
        c, half = r.convergence, r.half_way
        lines.append(f"| {method} | {r.iterations} | {c.final_loss:.4f} | "
                     f"{c.final_over_noise_floor:.3f} | {c.relative_drop_last_window:.2e} "
                     f"| {'yes' if c.flat else 'NO'} | {half.amp_ssim:.4f}, "
                     f"{half.phase_ssim:.4f} (iteration {half.iteration}) |")
    return lines


def _reach(t: Target, ours_s: float) -> str:
    if t.reaches_our_ssim is None:
        return "never (within the run)"
    seconds = t.reaches_our_ssim.seconds
    return (f"iteration {t.reaches_our_ssim.iteration}, {seconds:.3g} s "
            f"({seconds / ours_s:.3g}x ours)")


def _targets_table(report: PeerReport) -> list[str]:
    lines = ["", "## Targets", "",
             "| peer | amp SSIM gap (peer - ours) | phase SSIM gap | within 0.05 | "
             "speed ratio (peer / ours) | >= 100x | pty-chi reaches our SSIM at |",
             "|---|---|---|---|---|---|---|"]
    for method in METHODS:
        t = report.targets[method]
        lines.append(f"| {method} | {t.amp_ssim_gap:+.4f} | {t.phase_ssim_gap:+.4f} | "
                     f"{'yes' if t.within_0_05_ssim else 'NO'} | {t.speed_ratio:.3g}x | "
                     f"{'yes' if t.at_least_100x_faster else 'NO'} | "
                     f"{_reach(t, report.ours.median_s)} |")
    return lines


def render_markdown(report: PeerReport) -> str:
    lines = [*_header(report), *_results_table(report), *_convergence_table(report),
             *_targets_table(report)]
    lines += ["", f"**Verdict:** {report.verdict}", "", f"Command: `{report.command}`", ""]
    return "\n".join(lines)


def _aligned_panels(report: PeerReport, gt: np.ndarray,
                    objects: dict[str, np.ndarray]) -> list[tuple]:
    """(name, amplitude, phase, metrics or None) of the scored region: the truth, then each
    reconstruction aligned to it as the metrics align."""
    from ptycho_torch.metrics import align

    rows, cols = report.scored_slices()
    scores = {"ours": report.ours.metrics,
              **{f"pty-chi {m}": r.metrics for m, r in report.ptychi.methods.items()}}
    g = gt[rows, cols].astype(np.complex128)
    panels = [("ground truth", np.abs(g), align(g, g)[3], None)]
    for name, obj in objects.items():
        pred_amp, _, pred_phase, _ = align(obj[rows, cols].astype(np.complex128), g)
        panels.append((name, pred_amp, pred_phase, scores[name]))
    return panels


def save_reconstructions_figure(path: Path, report: PeerReport, gt: np.ndarray,
                                objects: dict[str, np.ndarray]) -> None:
    """Aligned amplitude and phase of the scored region: ground truth, then ``objects``
    ("ours", "pty-chi ePIE", "pty-chi LSQML"), each titled with its SSIM."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tracking.files import atomic_savefig

    panels = _aligned_panels(report, gt, objects)
    amp_lim = (float(panels[0][1].min()), float(panels[0][1].max()))
    phase_lim = (float(panels[0][2].min()), float(panels[0][2].max()))
    fig, axes = plt.subplots(2, len(panels), figsize=(4.2 * len(panels), 5.4), squeeze=False)
    for col, (name, amp, phase, m) in enumerate(panels):
        for row, (img, lim, cmap, label, key) in enumerate((
                (amp, amp_lim, "gray", "amplitude", "amp_ssim"),
                (phase, phase_lim, "twilight", "phase", "phase_ssim"))):
            ax = axes[row, col]
            ax.imshow(img, cmap=cmap, vmin=lim[0], vmax=lim[1])
            title = f"{name}: {label}" + ("" if m is None else f"\nSSIM {m[key]:.3f}")
            ax.set_title(title, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"{report.data.test}: scored region, aligned as the metrics align "
                 f"({report.device})", fontsize=10)
    fig.tight_layout()
    atomic_savefig(path, fig, dpi=100)
    plt.close(fig)


def _plot_loss(ax, report: PeerReport) -> None:
    for method, color in zip(METHODS, ("C0", "C1"), strict=True):
        loss = report.ptychi.methods[method].loss
        ax.semilogy(np.arange(1, len(loss) + 1), loss, color=color, label=f"pty-chi {method}")
    ax.axhline(report.noise_floor_loss, color="k", lw=0.8, ls=":",
               label="noise floor (true object)")
    ax.set_xscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("mean (sqrt I_pred - sqrt I_meas)^2")
    ax.set_ylim(report.noise_floor_loss * 0.8, None)
    ax.legend(fontsize=8)
    ax.set_title("pty-chi data-fit loss")


def _plot_ssim_vs_time(ax, report: PeerReport) -> None:
    for method, color in zip(METHODS, ("C0", "C1"), strict=True):
        checkpoints = report.ptychi.methods[method].checkpoints
        t = [p.seconds for p in checkpoints]
        for key, style in SSIM_KEYS:
            ax.plot(t, [p.metrics[key] for p in checkpoints], style, marker=".",
                    color=color, label=f"{method} {key.replace('_', ' ')}")
    for key, style in SSIM_KEYS:
        ax.axhline(report.ours.metrics[key], color="k", ls=style, lw=0.8,
                   label=f"ours {key.replace('_', ' ')}")
    ax.axvline(report.ours.median_s, color="r", lw=0.8, label="our inference time")
    ax.set_xscale("log")
    ax.set_xlabel("pty-chi wall time, s")
    ax.set_ylabel("SSIM")
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("SSIM vs wall time")


def save_convergence_figure(path: Path, report: PeerReport) -> None:
    """pty-chi's data-fit loss per iteration and SSIM against its wall time, with ours;
    needs only the report."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tracking.files import atomic_savefig

    fig, (ax_loss, ax_ssim) = plt.subplots(1, 2, figsize=(11, 4))
    _plot_loss(ax_loss, report)
    _plot_ssim_vs_time(ax_ssim, report)
    fig.tight_layout()
    atomic_savefig(path, fig, dpi=100)
    plt.close(fig)


def write_report(stem: Path, report: PeerReport, gt: np.ndarray,
                 objects: dict[str, np.ndarray]) -> str:
    """``stem``.json, .md, .png and ``stem``-convergence.png; returns the markdown."""
    markdown = render_markdown(report)
    write_results(stem, report.to_json(), markdown)
    save_reconstructions_figure(stem.with_suffix(".png"), report, gt, objects)
    save_convergence_figure(stem.parent / f"{stem.name}-convergence.png", report)
    return markdown
