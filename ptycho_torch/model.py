"""PtychoPINN: the network joined to the physics, its losses, and the LightningModule."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import NamedTuple

import lightning as L
import torch
from torch import Tensor, nn

from ptycho_torch.config import LossMode, ModelConfig, TrainingConfig
from ptycho_torch.network import PtychoNet
from ptycho_torch.physics import ForwardModel, intensity_scale


class ForwardOutput(NamedTuple):
    """What PtychoPINN.forward computes for a batch of B groups of C patterns of N x N px.

    x_norm: (B, C, N, N) float32, the normalized diffraction amplitude the network sees.
    amplitude, phase: (B, C, N, N) float32, the network's object patches (amplitude in
        (0, 1), phase in radians in (-pi, pi)), before any merge.
    object: (B, C, N, N) complex64, the object patches the physics illuminates (after the
        gridsize > 1 merge and re-extraction).
    pred_amplitude: (B, C, N, N) float32, s * g * |F(O P)|, the predicted diffraction
        amplitude in sqrt(counts).
    """

    x_norm: Tensor
    amplitude: Tensor
    phase: Tensor
    object: Tensor
    pred_amplitude: Tensor

    def stage_tensors(self, diffraction: Tensor) -> dict[str, Tensor]:
        """The patch-statistics stages (docs/patch_stats.md), given the raw input."""
        return {
            "input_raw": diffraction,
            "input_normalized": self.x_norm,
            "object_amplitude": self.object.abs(),
            "object_phase": self.object.angle(),
            "predicted_amplitude": self.pred_amplitude,
        }


class PtychoPINN(nn.Module):
    """Network -> object patches -> (merge) -> probe -> far field -> s * g * A.

    ``s`` is the reference physics scale sqrt(nphotons)/(N/2) (fixed, so targets are in
    counts). ``g`` is a global object-amplitude gain, trainable by default as the
    reference's trainable intensity scale: input normalization fixes the data's energy at
    (N/2)^2 per pattern, which an object of amplitude <= 1 times the normalized probe cannot
    reach in general. It starts energy-matched (an object of amplitude 0.5 reproduces the
    mean normalized energy); metrics align the amplitude scale, so g never biases them.

    ``patch_stats``: None (no instrumentation: nothing computed, kept or synced), or an
    armed recorder (``tracking.patch_stats.PatchStatsRecorder.arm``) whose
    ``observe_stages`` sees every stage inside forward.
    """

    def __init__(self, config: ModelConfig, probe: Tensor):
        super().__init__()
        self.config = config
        n, c = config.patch_size_px, config.n_channels
        self.network = PtychoNet(n, c_in=c, c_out=c, n_filters_scale=config.n_filters_scale,
                                 probe_big=config.probe_big, decoder=config.decoder)
        # channels-last convolutions: 1.1-1.25x faster training steps on CPU in
        # bench/results/2026-11-29-cpu-quick-train.md (and the layout tensor cores want)
        self.network.to(memory_format=torch.channels_last)
        self.physics = ForwardModel(probe, config.probe_scale, config.probe_mask)
        self.physics_scale = intensity_scale(config.nphotons, n)
        gain = (n / 2) / (0.5 * self.physics.probe.abs().pow(2).sum().sqrt().item())
        log_gain = torch.tensor(math.log(gain))
        if config.object_gain_trainable:
            self.log_object_gain = nn.Parameter(log_gain)
        else:
            self.register_buffer("log_object_gain", log_gain)
        self.patch_stats = None

    def forward(self, diffraction: Tensor, offsets: Tensor,
                norm_factor: Tensor) -> ForwardOutput:
        """diffraction (B, C, N, N) float32 raw amplitude; offsets (B, C, 2) px (x, y);
        norm_factor (B,) float32. See :class:`ForwardOutput`."""
        out = self.forward_uninstrumented(diffraction, offsets, norm_factor)
        if self.patch_stats is not None:
            self.patch_stats.observe_stages(out.stage_tensors(diffraction),
                                            mean_input_scale=norm_factor,
                                            physics_scale=self.physics_scale,
                                            object_gain=self.log_object_gain.exp())
        return out

    def forward_uninstrumented(self, diffraction: Tensor, offsets: Tensor,
                               norm_factor: Tensor) -> ForwardOutput:
        """The forward path with no instrumentation code at all (see :meth:`forward`)."""
        x_norm = diffraction * norm_factor.view(-1, 1, 1, 1)
        # bf16 under autocast, if the caller asks
        amplitude, phase = self.network(x_norm.contiguous(memory_format=torch.channels_last))
        # physics always in float32: complex and FFT ops have no bf16 kernels, and counts
        # of 1e9 photons need the range
        with torch.autocast(device_type=x_norm.device.type, enabled=False):
            amplitude, phase = amplitude.float().contiguous(), phase.float().contiguous()
            obj = torch.polar(amplitude, phase)
            if self.config.n_channels > 1:
                obj = self.physics.merge(obj, offsets.float())
            intensity = self.physics(obj)
            gain = self.log_object_gain.exp()
            pred_amplitude = (self.physics_scale * gain) * torch.sqrt(intensity.clamp_min(1e-12))
        return ForwardOutput(x_norm, amplitude, phase, obj, pred_amplitude)

    def target_amplitude(self, x_norm: Tensor) -> Tensor:
        """Measured amplitude in sqrt(counts): s * X_norm."""
        return self.physics_scale * x_norm

    def loss(self, out: ForwardOutput) -> Tensor:
        target = self.target_amplitude(out.x_norm)
        pred = out.pred_amplitude
        if self.config.loss_mode == LossMode.MAE:
            return (pred - target).abs().mean()
        lam = (pred**2).clamp_min(1e-12)
        return (lam - target**2 * torch.log(lam)).mean()


class PtychoLightning(L.LightningModule):
    """The system: PtychoPINN trained with Adam and ReduceLROnPlateau on its physics loss."""

    def __init__(self, model_config: ModelConfig, training_config: TrainingConfig,
                 probe: Tensor, has_validation: bool = True):
        super().__init__()
        # in the checkpoint only (TrackedRun logs the flat config as params itself), as plain
        # JSON types so that checkpoints load with torch.load(weights_only=True)
        self.save_hyperparameters(json.loads(json.dumps(
            {"model": dataclasses.asdict(model_config),
             "training": dataclasses.asdict(training_config)})), logger=False)
        self.model = PtychoPINN(model_config, probe)
        self.training_config = training_config
        self.has_validation = has_validation

    def forward(self, batch: dict) -> ForwardOutput:
        return self.model(batch["diffraction"], batch["offsets"], batch["norm_factor"])

    def _shared_step(self, batch: dict, stage: str) -> Tensor:
        out = self(batch)
        loss = self.model.loss(out)
        # sync_dist: with DDP every rank sees the same epoch loss, so ReduceLROnPlateau steps
        # the same on all of them (a no-op on one device)
        self.log(f"{stage}_loss", loss, on_step=stage == "train", on_epoch=True,
                 prog_bar=True, batch_size=batch["diffraction"].shape[0], sync_dist=True)
        return loss

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: dict, batch_idx: int) -> Tensor:
        return self._shared_step(batch, "val")

    def on_before_optimizer_step(self, optimizer) -> None:
        # the global L2 norm of the gradients, every step: a diverging or vanishing update
        # shows before the loss does. One fused reduction, read when Lightning logs.
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        if grads:
            self.log("grad_norm", torch.nn.utils.get_total_norm(grads), on_step=True,
                     on_epoch=False)

    def configure_optimizers(self):
        cfg = self.training_config
        optimizer = torch.optim.Adam(self.parameters(), lr=cfg.learning_rate)
        # An improvement counts when the loss falls by more than 1e-4 in absolute terms
        # (Keras' min_delta, as the reference). torch's default is relative, and the Poisson
        # loss carries a large data-dependent offset (-sum k log k, about -1e4 per element
        # at 1e6 photons), which turned 1e-4 relative into ~1 absolute: real progress
        # counted as a plateau and the learning rate fell early.
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=cfg.lr_factor, patience=cfg.lr_patience_epochs,
            threshold=1e-4, threshold_mode="abs", min_lr=cfg.min_learning_rate)
        monitor = "val_loss" if self.has_validation else "train_loss_epoch"
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "monitor": monitor}}
