"""Training-step latency of PtychoPINN (gridsize 2, N 64) on synthetic batches, per variant.

A variant is a dtype (fp32, or bf16 autocast), optionally with "+nchw" (network in the plain
contiguous layout instead of the model's channels-last, for comparison) and/or "+compile"
(torch.compile of the network; the physics stays eager: complex FFTs) or "+graphs" (the same
with mode="reduce-overhead": the network's kernels replayed as CUDA graphs, fewer launches).
"""

from __future__ import annotations

import statistics

import torch

from bench.common import timed

DTYPES = ("fp32", "bf16")
OPTIONS = ("nchw", "compile", "graphs")


def check_variant(variant: str) -> None:
    """ValueError unless ``variant`` is a dtype with known options (e.g. "bf16+compile")."""
    dtype, *options = variant.split("+")
    if dtype not in DTYPES or set(options) - set(OPTIONS):
        raise ValueError(f"cannot read {variant!r}")


class _Contiguous(torch.nn.Module):
    """The network in the plain NCHW layout (the model hands it channels-last input)."""

    def __init__(self, network: torch.nn.Module):
        super().__init__()
        self.network = network

    def forward(self, x):
        return self.network(x.contiguous())


def build_step_model(options: list[str], device: str) -> torch.nn.Module:
    """A seeded PtychoPINN (gridsize 2, N 64) on ``device``, its network rewrapped per the
    variant's options."""
    from ptycho_torch.config import ModelConfig
    from ptycho_torch.model import PtychoPINN
    from ptycho_torch.simulate import make_probe

    torch.manual_seed(0)
    model = PtychoPINN(ModelConfig(patch_size_px=64, n_channels=4, nphotons=1e9),
                       torch.from_numpy(make_probe(64))).to(device)
    if "nchw" in options:
        model.network = _Contiguous(model.network.to(memory_format=torch.contiguous_format))
    if "graphs" in options:
        model.network = torch.compile(model.network, mode="reduce-overhead")
    elif "compile" in options:
        model.network = torch.compile(model.network)
    return model


def time_steps(model: torch.nn.Module, batch: int, dtype: str, device: str, n_steps: int,
               warmup: int) -> list[float]:
    """Seconds of each of ``n_steps`` Adam steps after ``warmup`` untimed ones (compilation
    and allocator warm-up happen there)."""
    x = torch.rand(batch, 4, 64, 64, device=device)
    offsets = torch.randn(batch, 4, 2, device=device) * 3
    norm = torch.ones(batch, device=device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    autocast = torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=dtype == "bf16")

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            out = model(x, offsets, norm)
        model.loss(out).backward()  # its tensors are float32 (physics runs outside autocast)
        optimizer.step()

    seconds = [timed(device, step)[1] for _ in range(n_steps + warmup)]
    return seconds[warmup:]


def bench_train_steps(device: str, batch_sizes: list[int], variants: list[str],
                      n_steps: int) -> list[dict]:
    """One row per (batch, variant): median step latency, groups/s, CUDA peak memory."""
    rows = []
    for batch in batch_sizes:
        for variant in variants:
            dtype, *options = variant.split("+")
            model = build_step_model(options, device)
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            warmup = 3 if {"compile", "graphs"} & set(options) else 2
            median = statistics.median(time_steps(model, batch, dtype, device, n_steps, warmup))
            rows.append({"batch": batch, "dtype": variant, "step_ms": 1e3 * median,
                         "groups_per_s": batch / median, "n_steps": n_steps,
                         "peak_device_mib": (torch.cuda.max_memory_allocated() / 2**20
                                             if device == "cuda" else None)})
    return rows
