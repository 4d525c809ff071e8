"""What patch statistics cost on the GPU: a training step and an inference batch with the
flag off, and with it on past its limit, against the same work with no instrumentation code
at all (``PtychoPINN.forward_uninstrumented``), by ``torch.cuda.memory_stats``; and what the
first K instrumented batches cost.

Variants, each on a fresh seeded model:

- ``uninstrumented``: the model's forward is ``forward_uninstrumented``, no callback;
- ``off``: ``--log-patch-stats`` off: the plain forward, no callback (what train.py builds);
- ``past limit``: the flag on, K batches already instrumented: the callback's hooks run but
  the recorder stays disarmed;
- ``off again``: ``off`` once more, so a difference the measurement itself makes shows.

Training: K warm-up steps (instrumented in ``past limit``: their cost is the K-batch figure),
then every live CUDA tensor (parameters, gradients, Adam state, batch) goes to the host, the
cache is emptied and they come back in a fixed order, so the allocator's layout at the start
of the measured steps depends only on what is live (tests/torch/test_patch_stats_gpu.py
explains why), then the measured steps. Inference: one ``predict_and_stitch`` call over one
batch after the K instrumented ones, from an emptied cache. Compared between variants:
allocations, requested bytes (total and peak) and ``max_memory_allocated``. On a CPU the
same code runs and the memory figures are None (``torch.cuda.memory_stats`` needs a GPU).
"""

from __future__ import annotations

import gc
import time
from types import SimpleNamespace

import torch

from bench.common import sync

VARIANTS = ("uninstrumented", "off", "past limit", "off again")
MEMORY_KEYS = ("allocated_at_start", "allocations", "requested_total", "requested_peak",
               "max_memory_allocated")


def _memory(device: str, allocated_at_start: int | None) -> dict | None:
    if device != "cuda":
        return None
    torch.cuda.synchronize()
    stats = torch.cuda.memory_stats()
    return {"allocated_at_start": allocated_at_start,
            "allocations": stats["allocation.all.allocated"],
            "requested_total": stats["requested_bytes.all.allocated"],
            "requested_peak": stats["requested_bytes.all.peak"],
            "max_memory_allocated": torch.cuda.max_memory_allocated()}


def _reset(device: str) -> int | None:
    """Reset peak and accumulated statistics; memory allocated now (None on CPU)."""
    sync(device)
    if device != "cuda":
        return None
    torch.cuda.reset_peak_memory_stats()
    torch.cuda.reset_accumulated_memory_stats()
    return torch.cuda.memory_allocated()


def _release(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def _model(patch: int, channels: int, device: str, variant: str):
    from ptycho_torch.config import ModelConfig
    from ptycho_torch.model import PtychoPINN
    from ptycho_torch.simulate import make_probe

    torch.manual_seed(0)
    model = PtychoPINN(ModelConfig(patch_size_px=patch, n_channels=channels, nphotons=1e9),
                       torch.from_numpy(make_probe(patch))).to(device)
    if variant == "uninstrumented":  # the instance attribute shadows PtychoPINN.forward
        model.forward = model.forward_uninstrumented
    return model


def _recorder(variant: str, limit: int, folder):
    from tracking.patch_stats import PatchStatsRecorder

    return PatchStatsRecorder(limit, folder) if variant == "past limit" else None


# -- training ---------------------------------------------------------------------------
def _compact(run: SimpleNamespace, device: str) -> None:
    """Every tensor of the run to the host, the cache emptied, back in a fixed order."""
    if device != "cuda":
        return
    run.model.cpu()
    moved = [(state, key) for state in run.optimizer.state.values()
             for key, value in state.items() if torch.is_tensor(value) and value.is_cuda]
    for state, key in moved:
        state[key] = state[key].cpu()
    run.batch[:] = [tensor.cpu() for tensor in run.batch]
    _release(device)
    run.model.cuda()
    for state, key in moved:
        state[key] = state[key].cuda()
    run.batch[:] = [tensor.cuda() for tensor in run.batch]


def _train_step(run: SimpleNamespace) -> None:
    """One optimizer step, the patch-stats callback's hooks around it when there is one."""
    if run.callback is not None:
        run.callback.on_train_batch_start(run.trainer, run.pl_module, run.batch,
                                          run.trainer.global_step)
    run.optimizer.zero_grad(set_to_none=True)
    run.model.loss(run.model(*run.batch)).backward()
    run.optimizer.step()
    if run.callback is not None:
        run.callback.on_train_batch_end(run.trainer, run.pl_module, None, run.batch,
                                        run.trainer.global_step)
    run.trainer.global_step += 1


def _train_run(variant: str, device: str, patch: int, batch: int, limit: int, measured: int,
               folder) -> dict:
    from tracking.callbacks import PatchStatsCallback

    model = _model(patch, 4, device, variant)
    generator = torch.Generator(device=device).manual_seed(0)
    tensors = [torch.rand(batch, 4, patch, patch, device=device, generator=generator),
               torch.randn(batch, 4, 2, device=device, generator=generator) * 3,
               torch.ones(batch, device=device)]
    recorder = _recorder(variant, limit, folder)
    run = SimpleNamespace(
        model=model, optimizer=torch.optim.Adam(model.parameters(), lr=1e-3), batch=tensors,
        callback=PatchStatsCallback(recorder) if recorder is not None else None,
        trainer=SimpleNamespace(global_step=0, current_epoch=0, max_epochs=1,
                                sanity_checking=False),
        pl_module=SimpleNamespace(model=model))
    del model, tensors
    gc.disable()  # no collection inside a measured stretch
    try:
        start = _reset(device)
        started = time.perf_counter()
        for _ in range(limit):
            _train_step(run)
        sync(device)
        result = {"warmup_seconds": time.perf_counter() - started,
                  "warmup": _memory(device, start)}
        if recorder is not None and recorder.wants("train"):
            raise RuntimeError("the recorder is still armed after its limit")
        _compact(run, device)
        start = _reset(device)
        started = time.perf_counter()
        for _ in range(measured):
            _train_step(run)
        sync(device)
        result["measured_seconds"] = time.perf_counter() - started
        result["measured"] = _memory(device, start)
        result["records"] = len(recorder.records) if recorder is not None else 0
    finally:
        gc.enable()
        run = None
        _release(device)
    return result


# -- inference --------------------------------------------------------------------------
def _inference_run(variant: str, device: str, patch: int, batch: int, limit: int,
                   folder) -> dict:
    from bench.inference_speed import raster_scan
    from ptycho_torch.simulate import make_probe
    from ptycho_torch.workflows import predict_and_stitch

    model = _model(patch, 1, device, variant).eval()
    grouped, shape, origin = raster_scan(batch * (limit + 1), make_probe(patch))
    recorder = _recorder(variant, limit, folder)

    def call(grouped, model=model):
        return predict_and_stitch(model, grouped, shape, origin, device, batch,
                                  crop=patch * 20 // 64,
                                  progress=False, recorder=recorder)

    # the first K batches (instrumented in "past limit"), then one batch alone, measured
    from torch.utils.data import Subset

    start = _reset(device)
    started = time.perf_counter()
    call(Subset(grouped, range(batch * limit)))
    sync(device)
    result = {"warmup_seconds": time.perf_counter() - started,
              "warmup": _memory(device, start)}
    _release(device)
    gc.disable()
    try:
        start = _reset(device)
        started = time.perf_counter()
        call(Subset(grouped, range(batch * limit, batch * (limit + 1))))
        sync(device)
        result["measured_seconds"] = time.perf_counter() - started
        result["measured"] = _memory(device, start)
    finally:
        gc.enable()
    result["records"] = len(recorder.records) if recorder is not None else 0
    del model, call
    _release(device)
    return result


def measure(device: str, folder, *, patch: int = 64, train_batch: int = 4,
            inference_batch: int = 32, limit: int = 2, measured_steps: int = 3) -> dict:
    """Training and inference runs of every variant, after one priming run (CUDA context,
    cuBLAS workspace, FFT plans). Returns per-variant figures and the comparisons."""
    out = {"device": device, "patch": patch, "train_batch": train_batch,
           "inference_batch": inference_batch, "limit": limit,
           "measured_steps": measured_steps, "train": {}, "inference": {}}
    _train_run("off", device, patch, train_batch, limit, measured_steps, folder / "prime")
    _inference_run("off", device, patch, inference_batch, limit, folder / "prime")
    for variant in VARIANTS:
        out["train"][variant] = _train_run(variant, device, patch, train_batch, limit,
                                           measured_steps, folder / f"train-{variant}")
    for variant in VARIANTS:
        out["inference"][variant] = _inference_run(variant, device, patch, inference_batch,
                                                   limit, folder / f"infer-{variant}")
    for part in ("train", "inference"):
        runs = out[part]
        if runs["past limit"]["records"] != limit:
            raise RuntimeError(f"{part}: {runs['past limit']['records']} patch-stats records, "
                               f"{limit} expected")
        out[f"{part}_equal"] = (None if device != "cuda" else
                                {name: runs[name]["measured"] == runs["uninstrumented"]["measured"]
                                 for name in VARIANTS[1:]})
        out[f"{part}_instrumented_cost"] = instrumented_cost(
            runs["past limit"], runs["uninstrumented"], limit,
            measured_steps if part == "train" else 1)
    return out


def instrumented_cost(on: dict, plain: dict, limit: int, n_measured: int) -> dict:
    """What the K = ``limit`` instrumented batches added over the same batches
    uninstrumented: wall seconds (each run's first K batches less K of its later, plain
    ones, so a fresh model's first-batch costs cancel), and on a GPU the added allocations
    and peak allocated MiB."""
    def excess(run: dict) -> float:
        return run["warmup_seconds"] - limit * run["measured_seconds"] / n_measured

    cost = {"seconds": excess(on) - excess(plain)}
    if on["warmup"] is not None:
        cost["allocations"] = on["warmup"]["allocations"] - plain["warmup"]["allocations"]
        cost["peak_mib"] = (on["warmup"]["max_memory_allocated"]
                            - plain["warmup"]["max_memory_allocated"]) / 2**20
    return cost


def differences(runs: dict) -> list[str]:
    """Human-readable mismatches of every variant's measured figures against uninstrumented."""
    base = runs["uninstrumented"]["measured"]
    lines = []
    for name in VARIANTS[1:]:
        other = runs[name]["measured"]
        lines += [f"{name}: {key} {other[key]} vs {base[key]}" for key in MEMORY_KEYS
                  if other[key] != base[key]]
    return lines

