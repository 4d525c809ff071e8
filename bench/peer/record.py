"""The peer comparison's report as frozen dataclasses: the markdown and the figures read it by
attribute, and its JSON file is ``dataclasses.asdict`` of it (field order = key order).

Metrics are the dict ``ptycho_torch.metrics`` returns (amp_ssim, phase_ssim, amp_psnr,
phase_psnr, amp_frc50, phase_frc50, ...), kept as it is so the report carries all of them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

# the targets the comparison is judged by
SSIM_MARGIN = 0.05
SPEED_FACTOR = 100

OURS_TIMING = ("grouping + forward passes + stitching, scan arrays in memory -> stitched "
               "object on the host; model loaded beforehand, one warm-up run")
PTYCHI_TIMING = ("task build (data, object, probe to the device) + all iterations; "
                 "scoring at checkpoints excluded")


@dataclass(frozen=True, kw_only=True)
class Checkpoint:
    """pty-chi's object scored after ``iteration`` iterations, ``seconds`` of timed work in."""

    iteration: int
    seconds: float
    metrics: dict[str, float]


@dataclass(frozen=True, kw_only=True)
class Convergence:
    """A loss curve judged: flat when the relative decrease over the last ``window``
    iterations is below ``tolerance``; the final loss against the noise floor."""

    final_loss: float
    window: int
    relative_drop_last_window: float
    final_over_noise_floor: float
    tolerance: float
    flat: bool


@dataclass(frozen=True, kw_only=True)
class HalfWay:
    """SSIM at the checkpoint nearest half the iterations."""

    iteration: int
    amp_ssim: float
    phase_ssim: float


@dataclass(frozen=True, kw_only=True)
class MethodResult:
    """One pty-chi method: its loss per iteration, scored checkpoints, timed seconds (task
    build ``build_s`` included), final metrics and convergence."""

    loss: list[float]
    checkpoints: list[Checkpoint]
    seconds: float
    build_s: float
    iterations: int
    metrics: dict[str, float]
    convergence: Convergence
    half_way: HalfWay


@dataclass(frozen=True, kw_only=True)
class OursResult:
    """Our inference: stitch crop (px), seconds of each timed repeat and their median,
    groups and patterns reconstructed, the model's gridsize and width, metrics."""

    crop: int
    seconds: list[float]
    median_s: float
    n_groups: int
    n_patterns: int
    gridsize: int
    n_filters_scale: int
    metrics: dict[str, float]


@dataclass(frozen=True, kw_only=True)
class Reach:
    """The first checkpoint where a peer's amp and phase SSIM both reach ours."""

    iteration: int
    seconds: float


@dataclass(frozen=True, kw_only=True)
class Target:
    """One peer against ours: SSIM gaps (peer - ours), speed ratio (peer / ours seconds)."""

    amp_ssim_gap: float
    phase_ssim_gap: float
    within_0_05_ssim: bool
    speed_ratio: float
    at_least_100x_faster: bool
    reaches_our_ssim: Reach | None


@dataclass(frozen=True, kw_only=True)
class DataInfo:
    """The test scan: file, patterns, N, photons per pattern, overlap, object shape."""

    test: str
    n_patterns: int
    patch_size: int
    nphotons: float
    overlap: float | None
    object_shape: list[int]
    metadata: dict


@dataclass(frozen=True, kw_only=True)
class ModelInfo:
    """Our model's folder and how it came to be (trained here, or given)."""

    dir: str
    how: str


@dataclass(frozen=True, kw_only=True)
class Timing:
    """What each side's seconds cover."""

    ours: str = OURS_TIMING
    ptychi: str = PTYCHI_TIMING


@dataclass(frozen=True, kw_only=True)
class PtychiSection:
    """pty-chi's settings as run, and each method's result by name."""

    batch_size: int
    epie_alpha: float
    lsqml_noise: str
    probe: str = "fixed (known probeGuess, scaled to the data's mean counts)"
    positions: str = "fixed (xcoords, ycoords)"
    object_init: str = "ones"
    convergence_window: int
    convergence_tolerance: float
    methods: dict[str, MethodResult]


@dataclass(frozen=True, kw_only=True)
class Env:
    """Library versions, torch's CPU threads, the machine."""

    torch: str
    ptychi: str
    threads: int
    machine: str
    python: str


@dataclass(frozen=True, kw_only=True)
class PeerReport:
    """Everything one ``python -m bench.peer`` run found; ``scored_box`` is the scored
    region's [[row start, stop], [col start, stop]]."""

    date: str
    device: str
    command: str
    data: DataInfo
    model: ModelInfo
    scored_box: list[list[int]]
    timing: Timing
    ours: OursResult
    noise_floor_loss: float
    ptychi: PtychiSection
    targets: dict[str, Target]
    verdict: str
    env: Env

    def to_json(self) -> dict:
        """The JSON file's content."""
        return dataclasses.asdict(self)

    def scored_slices(self) -> tuple[slice, slice]:
        """The scored region as (rows, cols) slices of the object frame."""
        (r0, r1), (c0, c1) = self.scored_box
        return slice(r0, r1), slice(c0, c1)


def build_target(peer: MethodResult, ours: OursResult, reach: Reach | None) -> Target:
    """How one peer compares with ours against the SSIM margin and the speed factor."""
    gap_amp = peer.metrics["amp_ssim"] - ours.metrics["amp_ssim"]
    gap_phase = peer.metrics["phase_ssim"] - ours.metrics["phase_ssim"]
    ratio = peer.seconds / ours.median_s
    return Target(amp_ssim_gap=gap_amp, phase_ssim_gap=gap_phase,
                  within_0_05_ssim=bool(gap_amp <= SSIM_MARGIN and gap_phase <= SSIM_MARGIN),
                  speed_ratio=ratio, at_least_100x_faster=bool(ratio >= SPEED_FACTOR),
                  reaches_our_ssim=reach)


def build_verdict(targets: dict[str, Target], device: str) -> str:
    """One sentence: are both targets met against every peer?"""
    quality = all(t.within_0_05_ssim for t in targets.values())
    speed = all(t.at_least_100x_faster for t in targets.values())
    return (f"quality target (within {SSIM_MARGIN} SSIM of both peers, amplitude and phase) "
            f"{'MET' if quality else 'NOT MET'}; speed target (>= {SPEED_FACTOR}x faster than "
            f"both) {'MET' if speed else 'NOT MET'} on {device}.")
