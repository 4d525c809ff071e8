"""python -m bench.fit_capacity: can the model fit a few groups as well as the true object?

A diagnostic for reconstruction quality: overfit K groups of a simulated scan (with
objectGuess) and print, every few hundred steps, the Poisson loss next to the loss of the
true object through the same forward model (merge included, energy-matched gain), and the
relative amplitude error of the central region of each merged patch. If the model reaches
the true object's loss here but not on the whole scan, the limit is learning the general
map, not the architecture or the physics.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import NamedTuple

import torch

from ptycho_torch import build_run_config, group_scan, load_scan, physics
from ptycho_torch.model import ForwardOutput, PtychoPINN


def true_object_loss(model: PtychoPINN, true: torch.Tensor, x_norm: torch.Tensor,
                     offsets: torch.Tensor) -> float:
    """Loss of the true patches through merge + physics, at the energy-matched gain."""
    merged = model.physics.merge(true, offsets) if true.shape[1] > 1 else true
    intensity = model.physics(merged)
    gain = math.sqrt(float((x_norm**2).sum() / intensity.sum()))
    pred = model.physics_scale * gain * torch.sqrt(intensity.clamp_min(1e-12))
    out = ForwardOutput(x_norm=x_norm, amplitude=true.abs(), phase=true.angle(),
                        object=merged, pred_amplitude=pred)
    return float(model.loss(out))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.fit_capacity",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="simulated NPZ with objectGuess")
    parser.add_argument("--n-groups", type=int, default=8,
                        help="groups to overfit, spread over the scan (default: %(default)s)")
    parser.add_argument("--gridsize", type=int, default=2,
                        help="group side; C = gridsize^2 (default: %(default)s)")
    parser.add_argument("--n-filters-scale", type=int, default=1,
                        help="network width multiplier; 2 is the reference (default: "
                             "%(default)s)")
    parser.add_argument("--steps", type=int, default=1500,
                        help="Adam steps on the same batch (default: %(default)s)")
    parser.add_argument("--learning-rate", type=float, default=1e-3,
                        help="Adam learning rate (default: %(default)g)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed for initialization (default: %(default)s)")
    return parser


class Batch(NamedTuple):
    """The groups overfit: raw diffraction, offsets, norm factors, and the true object
    patches (B, C, N, N) complex64 at their positions."""

    diffraction: torch.Tensor
    offsets: torch.Tensor
    norm: torch.Tensor
    true: torch.Tensor


def build_batch(scan, config, n_groups: int) -> Batch:
    """``n_groups`` groups spread evenly over the scan, with their true patches."""
    grouped = group_scan(scan, config)
    idx = torch.linspace(0, len(grouped) - 1, n_groups).long()
    n, c = config.model.patch_size_px, config.model.n_channels
    true = physics.extract_patches(torch.from_numpy(scan.object_guess),
                                   grouped.positions[idx].reshape(-1, 2).double(), n)
    return Batch(grouped.diffraction[idx], grouped.offsets[idx],
                 grouped.norm_factor.expand(len(idx)),
                 true.reshape(len(idx), c, n, n).to(torch.complex64))


def central_amplitude_error(estimate: torch.Tensor, true: torch.Tensor, n: int) -> float:
    """Mean |scaled estimate - true| / mean true amplitude on each patch's central quarter
    side, at the least-squares amplitude scale."""
    core = slice(n // 2 - n // 8, n // 2 + n // 8)
    est, ref = estimate[..., core, core].abs(), true[..., core, core].abs()
    scale = (est * ref).sum() / (est**2).sum()
    return float((scale * est - ref).abs().mean() / ref.mean())


def overfit(model: PtychoPINN, batch: Batch, steps: int, learning_rate: float,
            target: float) -> None:
    """Adam on the one batch; prints a table row every steps/5 steps."""
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    n = model.config.patch_size_px
    print("| step | loss | loss - true | central amp rel. error | s |")
    print("|---|---|---|---|---|")
    started = time.perf_counter()
    for step in range(steps + 1):
        optimizer.zero_grad(set_to_none=True)
        out = model(batch.diffraction, batch.offsets, batch.norm)
        loss = model.loss(out)
        if step % max(1, steps // 5) == 0:
            with torch.no_grad():
                error = central_amplitude_error(out.object, batch.true, n)
            print(f"| {step} | {loss.item():.2f} | {loss.item() - target:.2f} | {error:.3f} | "
                  f"{time.perf_counter() - started:.0f} |")
        loss.backward()
        optimizer.step()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.manual_seed(args.seed)
    scan = load_scan(args.data)
    if scan.object_guess is None:
        print(f"{args.data}: no objectGuess; a simulated scan is needed", file=sys.stderr)
        return 2
    config = build_run_config(scan, gridsize=args.gridsize,
                              n_filters_scale=args.n_filters_scale)
    batch = build_batch(scan, config, args.n_groups)
    model = PtychoPINN(config.model, torch.from_numpy(scan.probe))
    x_norm = batch.diffraction * batch.norm.view(-1, 1, 1, 1)
    target = true_object_loss(model, batch.true, x_norm, batch.offsets)
    print(f"{args.n_groups} groups of {config.model.n_channels} from {args.data}; "
          f"true-object loss {target:.2f}")
    overfit(model, batch, args.steps, args.learning_rate, target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
