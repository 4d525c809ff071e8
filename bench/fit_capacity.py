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

import torch

from ptycho_torch import physics
from ptycho_torch.config import DataConfig, ModelConfig
from ptycho_torch.data import build_grouped_scan, load_scan, resolve_nphotons
from ptycho_torch.model import PtychoPINN


def true_object_loss(model: PtychoPINN, true: torch.Tensor, x_norm: torch.Tensor,
                     offsets: torch.Tensor) -> float:
    """Loss of the true patches through merge + physics, at the energy-matched gain."""
    merged = model.physics.merge(true, offsets) if true.shape[1] > 1 else true
    intensity = model.physics(merged)
    gain = math.sqrt(float((x_norm**2).sum() / intensity.sum()))
    pred = model.physics_scale * gain * torch.sqrt(intensity.clamp_min(1e-12))
    return float(model.loss({"x_norm": x_norm, "pred_amplitude": pred}))


def main(argv: list[str] | None = None) -> int:
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
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    scan = load_scan(args.data)
    if scan.object_guess is None:
        print(f"{args.data}: no objectGuess; a simulated scan is needed", file=sys.stderr)
        return 2
    n = scan.patch_size
    c = args.gridsize**2
    grouped = build_grouped_scan(scan, DataConfig(patch_size_px=n, gridsize=args.gridsize))
    idx = torch.linspace(0, len(grouped) - 1, args.n_groups).long()
    diffraction, offsets = grouped.diffraction[idx], grouped.offsets[idx]
    norm = grouped.norm_factor.expand(len(idx))
    config = ModelConfig(patch_size_px=n, n_channels=c, n_filters_scale=args.n_filters_scale,
                         nphotons=resolve_nphotons(scan, None))
    model = PtychoPINN(config, torch.from_numpy(scan.probe))
    true = physics.extract_patches(torch.from_numpy(scan.object_guess),
                                   grouped.positions[idx].reshape(-1, 2).double(), n)
    true = true.reshape(len(idx), c, n, n).to(torch.complex64)
    x_norm = diffraction * norm.view(-1, 1, 1, 1)
    target = true_object_loss(model, true, x_norm, offsets)
    core = slice(n // 2 - n // 8, n // 2 + n // 8)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate)
    print(f"{args.n_groups} groups of {c} from {args.data}; true-object loss {target:.2f}")
    print("| step | loss | loss - true | central amp rel. error | s |")
    print("|---|---|---|---|---|")
    started = time.perf_counter()
    for step in range(args.steps + 1):
        optimizer.zero_grad(set_to_none=True)
        out = model(diffraction, offsets, norm)
        loss = model.loss(out)
        if step % max(1, args.steps // 5) == 0:
            with torch.no_grad():
                est = out.object[..., core, core].abs()
                ref = true[..., core, core].abs()
                scale = (est * ref).sum() / (est**2).sum()
                error = float((scale * est - ref).abs().mean() / ref.mean())
            value = loss.item()
            print(f"| {step} | {value:.2f} | {value - target:.2f} | {error:.3f} | "
                  f"{time.perf_counter() - started:.0f} |")
        loss.backward()
        optimizer.step()
    return 0


if __name__ == "__main__":
    sys.exit(main())
