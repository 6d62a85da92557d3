"""The 3D LinkNet of deepbet (Fisch et al. 2024), written out as a plain ``torch.nn.Module``.

deepbet ships its two networks (a 128^3 bounding-box finder and a 256^3 brain segmenter) as TorchScript
traces; loading those would run the code stored inside them. This module rebuilds the same graph so that
only their tensors are read (:mod:`SynthBrainLib.extraction.torchscript_tensors`). The parameter names
match the traces' state dicts one for one, so a strict load names any missing or unexpected key.

Layout (channels in brackets): a 7^3 stride-2 stem [16] and 3^3 stride-2 max pool; four encoder stages of
two residual blocks [16, 32, 64, 128] (stride 2 from the second on); four decoder stages (1^3 conv,
3^3 transposed conv, 1^3 conv) added to the encoder's skips; a head of transposed conv, conv and a
2^3 transposed conv to two classes, softmax. Every norm is an instance norm without affine parameters.
Input (B, 1, D, H, W) with sides divisible by 32; output (B, 2, D, H, W) probabilities (1 = brain).
"""

from __future__ import annotations

import torch
from torch import nn


def _norm(channels: int) -> nn.InstanceNorm3d:
    return nn.InstanceNorm3d(channels)


class ResidualBlock(nn.Module):
    """Two 3^3 convolutions with instance norms, plus the (projected) input, then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.double_conv = nn.Sequential(
            nn.Conv3d(cin, cout, 3, stride, 1, bias=False),
            _norm(cout),
            nn.ReLU(inplace=True),
            nn.Conv3d(cout, cout, 3, 1, 1, bias=False),
            _norm(cout),
        )
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv3d(cin, cout, 1, stride, 0, bias=False), _norm(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        return torch.relu(self.double_conv(x) + residual)


class Down(nn.Module):
    """An encoder stage: two residual blocks, the first with the stage's stride."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.block1 = ResidualBlock(cin, cout, stride)
        self.block2 = ResidualBlock(cout, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block2(self.block1(x))


class Up(nn.Module):
    """A decoder stage: 1^3 conv to a quarter of the channels, 3^3 transposed conv, 1^3 conv out."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        mid = cin // 4
        self.conv1 = nn.Sequential(nn.Conv3d(cin, mid, 1, bias=False), _norm(mid), nn.ReLU(inplace=True))
        self.tp_conv = nn.Sequential(
            nn.ConvTranspose3d(mid, mid, 3, stride, 1, output_padding=stride - 1, bias=False),
            _norm(mid),
            nn.ReLU(inplace=True),
        )
        self.conv2 = nn.Sequential(nn.Conv3d(mid, cout, 1, bias=False), _norm(cout), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.tp_conv(self.conv1(x)))


class LinkNet3d(nn.Module):
    """deepbet's network: (B, 1, D, H, W) normalised intensities -> (B, 2, D, H, W) class probabilities."""

    def __init__(self) -> None:
        super().__init__()
        self.init = nn.Sequential(
            nn.Conv3d(1, 16, 7, 2, 3, bias=False), _norm(16), nn.ReLU(inplace=True), nn.MaxPool3d(3, 2, 1)
        )
        self.down0 = Down(16, 16, 1)
        self.down1 = Down(16, 32, 2)
        self.down2 = Down(32, 64, 2)
        self.down3 = Down(64, 128, 2)
        self.up0 = Up(128, 64, 2)
        self.up1 = Up(64, 32, 2)
        self.up2 = Up(32, 16, 2)
        self.up3 = Up(16, 16, 1)
        self.tp_conv1 = nn.Sequential(
            nn.ConvTranspose3d(16, 8, 3, 2, 1, output_padding=1), _norm(8), nn.ReLU(inplace=True)
        )
        self.conv = nn.Sequential(nn.Conv3d(8, 8, 3, 1, 1), _norm(8), nn.ReLU(inplace=True))
        self.tp_conv2 = nn.ConvTranspose3d(8, 2, 2, 2, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e0 = self.init(x)
        e1 = self.down0(e0)
        e2 = self.down1(e1)
        e3 = self.down2(e2)
        d = self.up0(self.down3(e3)) + e3
        d = self.up1(d) + e2
        d = self.up2(d) + e1
        d = self.up3(d) + e0
        return torch.softmax(self.tp_conv2(self.conv(self.tp_conv1(d))), dim=1)
