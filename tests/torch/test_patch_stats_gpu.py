"""Once the patch-stats limit has passed, training steps allocate on the GPU exactly what they
allocate with --log-patch-stats off.

The recorder is armed the way training arms it: a PatchStatsCallback whose batch hooks
attach the recorder to ``model.patch_stats`` while ``recorder.wants("train")`` and detach it
after each batch (train.py adds no callback at all with the flag off). The hooks are called
around plain optimizer steps with stand-ins for the Trainer (``global_step``,
``sanity_checking``) and the LightningModule (``model``), so nothing but the model, the
optimizer and the callback touches the GPU.

Each run: LIMIT warm-up steps (instrumented ones in the flag-on run), then every live CUDA
tensor of the run (parameters, gradients, Adam state, batch) is moved to the host, the cache
is emptied and they are moved back in a fixed order, so that the allocator's layout at the
start of the measured steps depends only on what is live then and not on which temporaries
the warm-up freed (a large-pool request served from a free block less than 1 MiB larger is
not split, and max_memory_allocated counts the whole block). Then the peak and accumulated
stats are reset and MEASURED steps run. Compared, to the byte, between flag off and flag on:
memory allocated when the measured steps start (anything the recorder or callback kept on
the GPU), max_memory_allocated, the peak of requested bytes (sizes as asked, before the
allocator's rounding), and the number and total requested bytes of allocations (any
instrumentation code still running would add some). A second flag-off run checks that the
measurement itself is reproducible, and the warm-up allocations check that the probe does
see the recorder when it is armed.
"""

from __future__ import annotations

import gc
from types import SimpleNamespace

import pytest
import torch

from ptycho_torch.config import ModelConfig
from ptycho_torch.model import PtychoPINN
from ptycho_torch.simulate import make_probe

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

LIMIT = 2  # --patch-stats-limit: the first LIMIT train batches are instrumented
MEASURED = 3  # steps after the limit


def _compact(model: PtychoPINN, optimizer: torch.optim.Optimizer, batch: list) -> None:
    """Move every CUDA tensor of the run to the host, empty the cache, move them back."""
    model.cpu()  # parameters, their gradients and buffers
    moved = [(state, key) for state in optimizer.state.values() for key, value in state.items()
             if torch.is_tensor(value) and value.is_cuda]
    for state, key in moved:
        state[key] = state[key].cpu()
    batch[:] = [tensor.cpu() for tensor in batch]
    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    model.cuda()
    for state, key in moved:
        state[key] = state[key].cuda()
    batch[:] = [tensor.cuda() for tensor in batch]


def _step(run: SimpleNamespace) -> None:
    """One training step, with the callback's batch hooks around it when there is one."""
    trainer, callback = run.trainer, run.callback
    if callback is not None:
        callback.on_train_batch_start(trainer, run.pl_module, run.batch, trainer.global_step)
    run.optimizer.zero_grad(set_to_none=True)
    loss = run.model.loss(run.model(*run.batch))
    loss.backward()
    run.optimizer.step()
    if callback is not None:
        callback.on_train_batch_end(trainer, run.pl_module, None, run.batch, trainer.global_step)
    trainer.global_step += 1


def _measure(run: SimpleNamespace) -> dict:
    result = {}
    torch.cuda.synchronize()
    torch.cuda.reset_accumulated_memory_stats()
    for _ in range(LIMIT):
        _step(run)
    torch.cuda.synchronize()
    result["warmup_allocations"] = torch.cuda.memory_stats()["allocation.all.allocated"]
    if run.recorder is not None:
        assert len(run.recorder.records) == LIMIT and not run.recorder.wants("train")
    assert run.model.patch_stats is None

    _compact(run.model, run.optimizer, run.batch)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    torch.cuda.reset_accumulated_memory_stats()
    result["allocated_at_start"] = torch.cuda.memory_allocated()
    for _ in range(MEASURED):
        _step(run)
    torch.cuda.synchronize()
    stats = torch.cuda.memory_stats()
    result.update(max_memory_allocated=torch.cuda.max_memory_allocated(),
                  requested_peak=stats["requested_bytes.all.peak"],
                  allocations=stats["allocation.all.allocated"],
                  requested_total=stats["requested_bytes.all.allocated"])
    if run.recorder is not None:
        assert len(run.recorder.records) == LIMIT  # nothing recorded after the limit
    return result


def _run(out_dir, log_patch_stats: bool) -> dict:
    """A fresh model and optimizer, LIMIT warm-up steps, MEASURED measured steps."""
    from tracking.callbacks import PatchStatsCallback
    from tracking.patch_stats import PatchStatsRecorder

    torch.manual_seed(0)
    config = ModelConfig(patch_size_px=64, n_channels=4, nphotons=1e9)
    model = PtychoPINN(config, torch.from_numpy(make_probe(64))).cuda()
    assert model.patch_stats is None  # off unless a recorder is attached
    generator = torch.Generator(device="cuda").manual_seed(0)
    batch = [torch.rand(4, 4, 64, 64, device="cuda", generator=generator),  # diffraction
             torch.randn(4, 4, 2, device="cuda", generator=generator) * 3,  # offsets
             torch.ones(4, device="cuda")]  # norm_factor
    recorder = PatchStatsRecorder(LIMIT, out_dir / "analysis") if log_patch_stats else None
    run = SimpleNamespace(
        model=model, optimizer=torch.optim.Adam(model.parameters(), lr=1e-3), batch=batch,
        recorder=recorder, callback=PatchStatsCallback(recorder) if recorder is not None else None,
        trainer=SimpleNamespace(global_step=0, sanity_checking=False),
        pl_module=SimpleNamespace(model=model))
    del model, batch, recorder
    gc.disable()  # no collection in the middle of a measured stretch
    try:
        result = _measure(run)
    finally:
        gc.enable()
        run = None
        gc.collect()
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
    return result


def test_steps_after_the_limit_allocate_what_flag_off_allocates(tmp_path):
    _run(tmp_path / "prime", log_patch_stats=False)  # CUDA context, cuBLAS workspace, plans
    off = _run(tmp_path / "off", log_patch_stats=False)
    on = _run(tmp_path / "on", log_patch_stats=True)
    off_again = _run(tmp_path / "off_again", log_patch_stats=False)
    assert off_again == off, f"the measurement itself is not reproducible: {off} {off_again}"
    # the probe sees the recorder while it is armed (it computes float64 statistics)
    assert on["warmup_allocations"] > off["warmup_allocations"]
    assert (tmp_path / "on" / "analysis" / "torch_patch_stats.json").exists()
    # independent of the allocator's layout: what is live, and what the steps ask for
    requests = ("allocated_at_start", "requested_peak", "allocations", "requested_total")
    assert {key: on[key] for key in requests} == {key: off[key] for key in requests}
    # the same requests from the same layout give the same blocks, so the same peak
    assert on["max_memory_allocated"] == off["max_memory_allocated"], (
        "same requests, different peak of allocated blocks: the allocator's layout at the "
        "start of the measured steps differs between the runs")
