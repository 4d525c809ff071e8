"""Encoder/decoder CNN of PtychoPINN: diffraction amplitudes in, object patches out.

Knows nothing of physics. Channels-first: input (B, C, N, N) with C = gridsize^2
(channel c = row c // g, column c % g of the group), outputs amplitude and phase
(B, C_out, N, N).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ptycho_torch.config import Decoder, check_patch_size


def _conv_block(c_in: int, c_out: int) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1),
        nn.ReLU(inplace=True),
    ]


class DecoderBranch(nn.Module):
    """Two [conv, conv, 2x nearest upsample] blocks, a head at N/2 padded to N.

    With ``probe_big`` an extra branch upsamples to N and fills the border the N/2 head
    leaves empty (the reference's "probe_big").

    ``kind=Decoder.FINE`` adds one [conv, conv] block at N/2, after the last upsample: in the
    reference the only layer at the output's own resolution is the linear 3x3 head, so
    pixel-scale detail has to be carried up from N/4.
    """

    def __init__(self, c_in: int, widths: tuple[int, int], c_out: int, activation, n: int,
                 probe_big: bool, kind: Decoder = Decoder.REFERENCE):
        super().__init__()
        fine = _conv_block(widths[1], widths[1]) if Decoder(kind) == Decoder.FINE else []
        self.blocks = nn.Sequential(
            *_conv_block(c_in, widths[0]), nn.Upsample(scale_factor=2, mode="nearest"),
            *_conv_block(widths[0], widths[1]), nn.Upsample(scale_factor=2, mode="nearest"),
            *fine,
        )
        self.head = nn.Conv2d(widths[1], c_out, 3, padding=1)
        self.activation = activation
        self.pad = n // 4
        self.border = None
        if probe_big:
            self.border = nn.Sequential(
                nn.Conv2d(widths[1], widths[1], 3, padding=1),
                nn.ReLU(inplace=True),
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(widths[1], c_out, 3, padding=1),
            )
            inner = torch.zeros(n, n)
            inner[self.pad : n - self.pad, self.pad : n - self.pad] = 1.0
            self.register_buffer("inner_mask", inner, persistent=False)

    def forward(self, z: Tensor) -> Tensor:
        features = self.blocks(z)
        centre = self.activation(self.head(features))
        p = self.pad
        out = nn.functional.pad(centre, (p, p, p, p))
        if self.border is not None:
            out = out + self.activation(self.border(features)) * (1.0 - self.inner_mask)
        return out


class PtychoNet(nn.Module):
    """Reference encoder (3 blocks) and two decoders (amplitude sigmoid, phase pi*tanh).

    x: (B, C, N, N) float32 normalized diffraction amplitude.
    Returns amplitude (B, C_out, N, N) in (0, 1) and phase (B, C_out, N, N) in (-pi, pi).
    """

    def __init__(self, n: int = 64, c_in: int = 1, c_out: int = 1, n_filters_scale: int = 2,
                 probe_big: bool = True, decoder: Decoder = Decoder.REFERENCE):
        super().__init__()
        check_patch_size(n)
        f = n_filters_scale
        widths = (32 * f, 64 * f, 128 * f)
        layers: list[nn.Module] = []
        prev = c_in
        for width in widths:
            layers += [*_conv_block(prev, width), nn.MaxPool2d(2)]
            prev = width
        self.encoder = nn.Sequential(*layers)
        decoder_widths = (64 * f, 32 * f)
        self.amplitude = DecoderBranch(prev, decoder_widths, c_out, torch.sigmoid, n,
                                       probe_big, decoder)
        self.phase = DecoderBranch(prev, decoder_widths, c_out,
                                   lambda t: math.pi * torch.tanh(t), n, probe_big, decoder)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Glorot-uniform weights and zero biases, as in the reference."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z = self.encoder(x)
        return self.amplitude(z), self.phase(z)
