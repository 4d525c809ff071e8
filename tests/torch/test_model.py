"""Network presets and the learning-rate schedule of the LightningModule."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ptycho_torch import inference, train, workflows
from ptycho_torch.config import ModelConfig, TrainingConfig
from ptycho_torch.model import PtychoLightning
from ptycho_torch.network import PtychoNet
from tests.conftest import write_random_stub


def _learning_rates(losses: list[float]) -> list[float]:
    module = PtychoLightning(ModelConfig(patch_size_px=16), TrainingConfig(learning_rate=1e-3),
                             torch.ones(16, 16, dtype=torch.complex64))
    setup = module.configure_optimizers()
    optimizer, scheduler = setup["optimizer"], setup["lr_scheduler"]["scheduler"]
    rates = []
    for loss in losses:
        scheduler.step(loss)
        rates.append(optimizer.param_groups[0]["lr"])
    return rates


def test_plateau_is_judged_on_absolute_change_whatever_the_loss_offset():
    # a Poisson loss of about -1e4 that keeps falling by 0.5 per epoch is progress; with
    # torch's default relative threshold (1e-4 * 1e4 = 1) it counted as a plateau
    falling = [-9500.0 - 0.5 * epoch for epoch in range(10)]
    assert _learning_rates(falling) == [1e-3] * 10
    # the same progress near zero gives the same schedule: only changes matter
    assert _learning_rates([loss + 9500.0 for loss in falling]) == [1e-3] * 10
    # a true plateau still halves the rate after patience (2) bad epochs, down to 1e-4
    flat = _learning_rates([-9500.0] * 20)
    assert flat[:3] == [1e-3] * 3 and flat[3] == pytest.approx(5e-4)
    assert min(flat) == pytest.approx(1e-4)


@pytest.mark.parametrize("n", [16, 32])
def test_fine_decoder_adds_layers_at_the_output_resolution_only(n):
    torch.manual_seed(0)
    reference = PtychoNet(n, c_in=4, c_out=4, n_filters_scale=1)
    fine = PtychoNet(n, c_in=4, c_out=4, n_filters_scale=1, decoder="fine")
    x = torch.rand(2, 4, n, n)
    for net in (reference, fine):
        amplitude, phase = net(x)
        assert amplitude.shape == phase.shape == (2, 4, n, n)
        assert 0 < amplitude.min() and amplitude.max() < 1
        assert phase.abs().max() < torch.pi
    extra = sum(p.numel() for p in fine.parameters()) - sum(
        p.numel() for p in reference.parameters())
    # two decoders x two 3x3 convs of 32 -> 32 channels (weights + biases)
    assert extra == 2 * 2 * (32 * 32 * 9 + 32)


def test_unknown_decoder_is_refused():
    with pytest.raises(ValueError, match="decoder"):
        ModelConfig(decoder="wide")
    with pytest.raises(ValueError, match="decoder"):
        PtychoNet(16, decoder="wide")


def test_decoder_flag_reaches_config_and_inference(tmp_path):
    data = tmp_path / "train.npz"
    write_random_stub(data, n=10, big_n=16)
    out = tmp_path / "run"
    argv = ["--train_data_file", str(data), "--output_dir", str(out), "--max_epochs", "1",
            "--gridsize", "2", "--batch_size", "3", "--logger", "none", "--quiet",
            "--decoder", "fine"]
    assert train.cli_main(argv) == 0
    assert json.loads((out / "config.json").read_text())["model"]["decoder"] == "fine"
    model, config = workflows.load_model(out)
    assert config.model.decoder == "fine"
    # the fine block's convolutions were saved and loaded (strict load), not re-initialised
    weights = torch.load(out / "model.pt", weights_only=True)
    fine_keys = [k for k in weights if k.startswith("network.amplitude.blocks.")]
    assert len(fine_keys) == 12  # 6 convs (2 blocks + the fine block) x weight, bias
    results = {}
    for mode in ("crop", "probe"):
        folder = tmp_path / f"inference-{mode}"
        assert inference.cli_main(["--model_path", str(out), "--test_data", str(data),
                                   "--output_dir", str(folder), "--logger", "none", "--quiet",
                                   "--stitch-weight", mode]) == 0
        with np.load(folder / "reconstruction.npz") as npz:
            results[mode] = npz["object"], npz["weight"]
    # same covered region, different averaging inside it
    assert np.array_equal(results["crop"][1], results["probe"][1])
    covered = results["crop"][1] > 0
    assert np.all(results["probe"][0][~covered] == 0)
    assert not np.allclose(results["crop"][0][covered], results["probe"][0][covered])
