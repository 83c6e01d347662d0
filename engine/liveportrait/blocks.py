"""Building blocks of the LivePortrait networks.

Attribute names follow the published state dicts (``conv``, ``norm``, ``mlp_shared.0``,
``weight_orig``...), so the official files load without any key renaming.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def coordinate_grid(d: int, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    """Grid ``[d,h,w,3]`` of (x, y, z) in -1..1 (x right, y down, z inward), as grid_sample reads it."""
    def axis(n: int) -> torch.Tensor:
        return torch.arange(n, dtype=like.dtype, device=like.device) / (n - 1) * 2 - 1

    z, y, x = torch.meshgrid(axis(d), axis(h), axis(w), indexing="ij")
    return torch.stack([x, y, z], dim=-1)


def keypoint_gaussians(kp: torch.Tensor, d: int, h: int, w: int, variance: float = 0.01) -> torch.Tensor:
    """Gaussian heat volume ``[B,K,d,h,w]`` centred on each keypoint ``kp`` ``[B,K,3]``."""
    grid = coordinate_grid(d, h, w, kp)
    diff = grid[None, None] - kp[:, :, None, None, None, :]
    return torch.exp(-0.5 * (diff ** 2).sum(-1) / variance)


class ConvNormAct(nn.Module):
    """Conv -> BatchNorm -> (leaky) ReLU, with optional 2x nearest up-sampling before or average pooling after.

    Covers the reference's SameBlock2d, DownBlock2d, DownBlock3d and UpBlock3d (3-D blocks only
    resample height and width).
    """

    def __init__(self, cin: int, cout: int, dims: int = 2, leaky: bool = False, down: bool = False,
                 up: bool = False):
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        bn = nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d
        self.conv = conv(cin, cout, kernel_size=3, padding=1)
        self.norm = bn(cout, affine=True)
        self.dims, self.leaky, self.down, self.up = dims, leaky, down, up

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.up:
            x = F.interpolate(x, scale_factor=(1.0, 2.0, 2.0) if self.dims == 3 else 2.0)
        x = self.norm(self.conv(x))  # a fresh tensor: activate in place
        x = F.leaky_relu(x, inplace=True) if self.leaky else F.relu(x, inplace=True)
        if self.down:
            x = F.avg_pool2d(x, 2) if self.dims == 2 else F.avg_pool3d(x, (1, 2, 2))
        return x


class ResBlock3d(nn.Module):
    """Pre-activation 3-D residual block (BN-ReLU-conv twice), resolution preserved."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv1 = nn.Conv3d(ch, ch, kernel_size=3, padding=1)
        self.conv2 = nn.Conv3d(ch, ch, kernel_size=3, padding=1)
        self.norm1 = nn.BatchNorm3d(ch, affine=True)
        self.norm2 = nn.BatchNorm3d(ch, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.norm1(x), inplace=True))
        out = self.conv2(F.relu(self.norm2(out), inplace=True))
        out += x
        return out


class HourglassEncoder(nn.Module):
    def __init__(self, expansion: int, cin: int, num_blocks: int, max_features: int):
        super().__init__()
        chans = [cin] + [min(max_features, expansion * 2 ** (i + 1)) for i in range(num_blocks)]
        self.down_blocks = nn.ModuleList(
            ConvNormAct(chans[i], chans[i + 1], dims=3, down=True) for i in range(num_blocks))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = [x]
        for block in self.down_blocks:
            outs.append(block(outs[-1]))
        return outs


class HourglassDecoder(nn.Module):
    def __init__(self, expansion: int, cin: int, num_blocks: int, max_features: int):
        super().__init__()
        blocks = []
        for i in reversed(range(num_blocks)):
            mult = 1 if i == num_blocks - 1 else 2
            blocks.append(ConvNormAct(mult * min(max_features, expansion * 2 ** (i + 1)),
                                      min(max_features, expansion * 2 ** i), dims=3, up=True))
        self.up_blocks = nn.ModuleList(blocks)
        self.out_filters = expansion + cin
        self.conv = nn.Conv3d(self.out_filters, self.out_filters, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(self.out_filters, affine=True)

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor:
        out = skips[-1]
        for j, block in enumerate(self.up_blocks):
            out = torch.cat([block(out), skips[-2 - j]], dim=1)
        return F.relu(self.norm(self.conv(out)), inplace=True)


class Hourglass(nn.Module):
    """3-D U-Net used by the dense motion network."""

    def __init__(self, expansion: int, cin: int, num_blocks: int, max_features: int):
        super().__init__()
        self.encoder = HourglassEncoder(expansion, cin, num_blocks, max_features)
        self.decoder = HourglassDecoder(expansion, cin, num_blocks, max_features)
        self.out_filters = self.decoder.out_filters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


class SpectralConv2d(nn.Module):
    """Conv2d whose weight is spectrally normalised, stored as the published ``weight_orig``/``weight_u``/``weight_v``.

    At inference the effective weight is ``weight_orig / sigma`` with
    ``sigma = u . (W v)`` (W = ``weight_orig`` flattened to ``[out, -1]``), which is exactly
    what ``torch.nn.utils.spectral_norm`` computes in eval mode (no power iteration). Sigma is
    computed in fp32 whatever the module dtype, so fp16 cannot overflow in the dot product.
    """

    def __init__(self, cin: int, cout: int, kernel_size: int, padding: int = 0, bias: bool = True):
        super().__init__()
        self.weight_orig = nn.Parameter(torch.empty(cout, cin, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(cout)) if bias else None
        self.register_buffer("weight_u", F.normalize(torch.randn(cout), dim=0))
        self.register_buffer("weight_v", F.normalize(torch.randn(cin * kernel_size * kernel_size), dim=0))
        nn.init.kaiming_uniform_(self.weight_orig, a=5 ** 0.5)
        self.padding = padding

    def weight(self) -> torch.Tensor:
        w = self.weight_orig.float()
        sigma = torch.dot(self.weight_u.float(), torch.mv(w.reshape(w.shape[0], -1), self.weight_v.float()))
        return (w / sigma).to(self.weight_orig.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight(), self.bias, padding=self.padding)


class SPADE(nn.Module):
    """Instance norm modulated by a per-pixel scale and shift predicted from the feature map ``seg``."""

    def __init__(self, ch: int, label_ch: int, hidden: int = 128):
        super().__init__()
        self.mlp_shared = nn.Sequential(nn.Conv2d(label_ch, hidden, 3, padding=1), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden, ch, 3, padding=1)
        self.mlp_beta = nn.Conv2d(hidden, ch, 3, padding=1)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        normed = F.instance_norm(x)
        actv = self.mlp_shared(F.interpolate(seg, size=x.shape[2:], mode="nearest"))
        return normed * (1 + self.mlp_gamma(actv)) + self.mlp_beta(actv)


class SPADEResBlock(nn.Module):
    """Residual block of two SPADE-normalised spectral convs, with a learned shortcut when widths differ."""

    def __init__(self, cin: int, cout: int, label_ch: int, hidden: int = 128):
        super().__init__()
        mid = min(cin, cout)
        self.learned_shortcut = cin != cout
        self.conv_0 = SpectralConv2d(cin, mid, 3, padding=1)
        self.conv_1 = SpectralConv2d(mid, cout, 3, padding=1)
        if self.learned_shortcut:
            self.conv_s = SpectralConv2d(cin, cout, 1, bias=False)
        self.norm_0 = SPADE(cin, label_ch, hidden)
        self.norm_1 = SPADE(mid, label_ch, hidden)
        if self.learned_shortcut:
            self.norm_s = SPADE(cin, label_ch, hidden)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        skip = self.conv_s(self.norm_s(x, seg)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, seg), 0.2, inplace=True))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, seg), 0.2, inplace=True))
        dx += skip
        return dx


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of an NCHW tensor."""

    def __init__(self, ch: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ch))
        self.bias = nn.Parameter(torch.zeros(ch))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class GRN(nn.Module):
    """Global response normalisation of ConvNeXt-V2 (channels-last input)."""

    def __init__(self, ch: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, ch))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gx = torch.norm(x, p=2, dim=(1, 2), keepdim=True)
        nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
        return self.gamma * (x * nx) + self.beta + x


class ConvNeXtBlock(nn.Module):
    """ConvNeXt-V2 block: depthwise 7x7, LayerNorm, MLP with GELU and GRN, residual."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.grn = GRN(4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(self.grn(F.gelu(self.pwconv1(self.norm(y)))))
        return x + y.permute(0, 3, 1, 2)


class MLP(nn.Module):
    """Fully connected ReLU network (stitching and retargeting heads)."""

    def __init__(self, input_size: int, hidden_sizes: list[int], output_size: int):
        super().__init__()
        layers: list[nn.Module] = []
        sizes = [input_size] + list(hidden_sizes)
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(sizes[-1], output_size))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)
