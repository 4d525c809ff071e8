#!/usr/bin/env python
"""Reconstructions of one scan side by side, beside its ground truth, each scored alike.

Each ``--reconstruction LABEL=PATH`` is a ``reconstruction.npz`` in the scan's object frame
(keys ``object`` and ``weight``: what ``python -m ptycho_torch.inference`` and a reference
record's reconstruction hold). Every one is scored by ``ptycho_torch.workflows.evaluate`` on
its covered region trimmed by half the stitch crop, shown with its constant phase offset to
the truth removed, amplitude and phase on the truth's colour ranges. Example::

    python tools/side_by_side.py --scan datasets/test.npz \\
        --reconstruction torch=outputs/baseline/inference/reconstruction.npz \\
        --reconstruction tensorflow=tf_record/reconstruction.npz --output side_by_side.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

PROG = "python tools/side_by_side.py"


def load_reconstructions(items: list[str], shape: tuple[int, int]) -> dict[str, dict]:
    """{label: {"object", "weight"}} from LABEL=PATH items; one-line errors on bad input."""
    out = {}
    for item in items:
        label, sep, path = item.partition("=")
        if not sep or not label or not path:
            raise ValueError(f"--reconstruction {item!r}: expected LABEL=PATH")
        try:
            with np.load(path) as npz:
                rec = {"object": npz["object"], "weight": npz["weight"]}
        except (OSError, KeyError, ValueError) as exc:
            raise ValueError(f"{path}: not a reconstruction.npz with 'object' and 'weight' "
                             f"({exc})") from exc
        if rec["object"].shape != shape:
            raise ValueError(f"{path}: object is {rec['object'].shape}, the scan's objectGuess "
                             f"is {shape}: not in the scan's object frame")
        out[label] = rec
    return out


def draw(path: Path, truth: np.ndarray, recs: dict[str, dict], scores: dict[str, dict],
         title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ptycho_torch.metrics import global_phase_aligned
    from tracking.files import atomic_savefig

    covered = np.any([r["weight"] > 0 for r in recs.values()], axis=0)
    shown_truth = np.where(covered, truth, 0)
    phase = np.angle(shown_truth)[covered]
    amp = np.abs(shown_truth)[covered]
    rows = [("ground truth", shown_truth, None)] + [
        (label, global_phase_aligned(r["object"], shown_truth), scores[label])
        for label, r in recs.items()]
    fig, axes = plt.subplots(len(rows), 2, figsize=(11, 3.6 * len(rows)), squeeze=False)
    for (label, img, score), (ax_a, ax_p) in zip(rows, axes, strict=True):
        ax_a.imshow(np.abs(img), cmap="gray", vmin=0, vmax=float(amp.max()) * 1.2)
        ax_p.imshow(np.angle(img), cmap="twilight", vmin=float(phase.min()),
                    vmax=float(phase.max()))
        suffix = "" if score is None else (f"\nSSIM {score['amp_ssim']:.3f}, "
                                           f"PSNR {score['amp_psnr']:.1f} dB")
        ax_a.set_title(f"{label}: amplitude{suffix}", fontsize=9)
        suffix = "" if score is None else (f"\nSSIM {score['phase_ssim']:.3f}, "
                                           f"RMS {score['phase_rms_rad']:.3f} rad")
        ax_p.set_title(f"{label}: phase (rad){suffix}", fontsize=9)
        for ax in (ax_a, ax_p):
            ax.set_axis_off()
    fig.suptitle(title)
    fig.tight_layout()
    atomic_savefig(path, fig, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--scan", required=True, help="NPZ scan with objectGuess")
    parser.add_argument("--reconstruction", action="append", required=True,
                        metavar="LABEL=PATH", help="a reconstruction.npz (repeatable)")
    parser.add_argument("--crop", type=int, default=None,
                        help="stitch crop whose half is trimmed before scoring "
                             "(default: the model default for the scan's N)")
    parser.add_argument("--output", required=True, help="PNG to write; scores go to "
                                                          "<output>.json beside it")
    args = parser.parse_args(argv)
    from ptycho_torch.data import load_scan
    from ptycho_torch.errors import InputError
    from ptycho_torch.reassembly import default_crop
    from ptycho_torch.workflows import evaluate

    try:
        scan = load_scan(args.scan)
        if scan.object_guess is None:
            raise ValueError(f"{args.scan}: has no objectGuess to compare against")
        recs = load_reconstructions(args.reconstruction, scan.object_guess.shape)
    except (InputError, ValueError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    crop = args.crop or default_crop(scan.patch_size)
    scores = {label: evaluate(r["object"], r["weight"], scan.object_guess, crop)
              for label, r in recs.items()}
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    draw(output, scan.object_guess, recs, scores, f"{Path(args.scan).name}: "
         + " vs ".join(recs))
    output.with_suffix(".json").write_text(json.dumps(scores, indent=2) + "\n")
    for label, score in scores.items():
        print(f"{label}: " + ", ".join(f"{k}={v:.4f}" for k, v in score.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
