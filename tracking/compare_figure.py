"""compare.png: what ``tracking.compare`` found, drawn.

Left: every parity-key row (mean_input_scale, physics_scale, var_zero_mean) as one group of
bars, each column's value divided by the baseline column's, with the tolerance band shaded:
a bar outside the band is a FAIL. Right: the per-patch ``var_zero_mean`` of the object
amplitude, one histogram per run and stage name (log10 axis), overlaid: a collapse shows as
a distribution far left of the others.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def per_patch_values(records: list[dict], stage: str = "object_amplitude"
                     ) -> dict[str, np.ndarray]:
    """{stage name: every per-patch var_zero_mean of ``stage`` over the records}."""
    values: dict[str, list[float]] = {}
    for record in records:
        per_patch = record.get("stages", {}).get(stage, {}).get("per_patch", {})
        if "var_zero_mean" in per_patch:
            values.setdefault(record["stage_name"], []).extend(per_patch["var_zero_mean"])
    return {name: np.asarray(v, dtype=np.float64) for name, v in values.items()}


def _parity_panel(ax, rows: list[dict], names: list[str], tolerance: float) -> None:
    parity = [row for row in rows if row["parity_key"]]
    if not parity:
        ax.text(0.5, 0.5, "no parity keys in common", ha="center", va="center")
        ax.set_axis_off()
        return
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        ratios = []
        for row in parity:
            base = row["values"][names[0]]
            ratios.append(row["values"][name] / base if base else math.nan)
        ax.bar(np.arange(len(parity)) + (i - (len(names) - 1) / 2) * width, ratios, width,
               label=name)
    ax.axhspan(1 - tolerance, 1 + tolerance, color="0.85", zorder=0,
               label=f"±{tolerance:.0%}")
    ax.axhline(1.0, color="0.3", lw=0.8)
    ax.set_xticks(np.arange(len(parity)))
    ax.set_xticklabels([f"{row['statistic']}\n{row['verdict']}" for row in parity],
                       rotation=30, ha="right", fontsize=7)
    ax.set_ylabel(f"value / {names[0][:30]}")
    ax.set_title("parity keys relative to the first column")
    ax.legend(fontsize=7)


def _distribution_panel(ax, records_by: dict[str, list[dict]]) -> None:
    drawn = 0
    for name, records in records_by.items():
        for stage_name, values in per_patch_values(records).items():
            positive = values[values > 0]
            if positive.size == 0:
                continue
            ax.hist(np.log10(positive), bins=30, histtype="step", lw=1.4, density=True,
                    label=f"{name[:28]} · {stage_name} ({positive.size} patches)")
            drawn += 1
    if not drawn:
        ax.text(0.5, 0.5, "no per-patch statistics (runs only)", ha="center", va="center")
        ax.set_axis_off()
        return
    ax.set_xlabel("log10 per-patch var_zero_mean of the object amplitude")
    ax.set_ylabel("density")
    ax.set_title("per-patch var_zero_mean, overlaid")
    ax.legend(fontsize=7)


def save_compare_png(path: str | Path, rows: list[dict], names: list[str], tolerance: float,
                     records_by: dict[str, list[dict]]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tracking.files import atomic_path

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5), constrained_layout=True)
    _parity_panel(left, rows, names, tolerance)
    _distribution_panel(right, records_by)
    failed = sum(row["verdict"] == "FAIL" for row in rows)
    fig.suptitle(f"tracking.compare: {len(rows) - failed}/{len(rows)} statistics PASS at "
                 f"±{tolerance:.0%}")
    with atomic_path(Path(path), suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return Path(path)
