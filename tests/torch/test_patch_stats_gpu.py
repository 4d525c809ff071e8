"""With --log-patch-stats off, training allocates exactly what the uninstrumented path does."""

from __future__ import annotations

import pytest
import torch

from ptycho_torch.config import ModelConfig
from ptycho_torch.model import PtychoPINN
from ptycho_torch.simulate import make_probe

pytestmark = pytest.mark.gpu


def _peak_memory_of_steps(forward_name: str, n_steps: int = 3) -> int:
    torch.manual_seed(0)
    config = ModelConfig(patch_size_px=64, n_channels=4, nphotons=1e9)
    model = PtychoPINN(config, torch.from_numpy(make_probe(64))).cuda()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator(device="cuda").manual_seed(0)
    diffraction = torch.rand(4, 4, 64, 64, device="cuda", generator=generator)
    offsets = torch.randn(4, 4, 2, device="cuda", generator=generator) * 3
    norm = torch.ones(4, device="cuda")
    forward = getattr(model, forward_name)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    for _ in range(n_steps):
        optimizer.zero_grad(set_to_none=True)
        loss = model.loss(forward(diffraction, offsets, norm))
        loss.backward()
        optimizer.step()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    del model, optimizer
    torch.cuda.empty_cache()
    return peak


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_flag_off_allocates_nothing_extra_on_gpu():
    assert model_is_off_by_default()
    uninstrumented = _peak_memory_of_steps("forward_uninstrumented")
    flag_off = _peak_memory_of_steps("forward")
    assert flag_off == uninstrumented


def model_is_off_by_default() -> bool:
    model = PtychoPINN(ModelConfig(patch_size_px=16), torch.ones(16, 16, dtype=torch.complex64))
    return model.patch_stats is None
