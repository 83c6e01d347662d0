"""The five LivePortrait networks (F, M, W, G, S), configured from ``models.json``.

Shapes in the comments are for the published configuration and a 256x256 input.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data_files import read_json
from .blocks import (MLP, ChannelLayerNorm, ConvNeXtBlock, ConvNormAct, Hourglass, ResBlock3d,
                     SPADEResBlock, coordinate_grid, keypoint_gaussians)

CONFIG_PATH = Path(__file__).with_name("models.json")
NETWORK_NAMES = ("appearance_feature_extractor", "motion_extractor", "warping_module",
                 "spade_generator", "stitching_retargeting_module")


def default_config() -> dict[str, Any]:
    """The published hyper-parameters (read once from ``models.json``; shared, so never changed)."""
    return read_json(CONFIG_PATH, "LivePortrait configuration")


def small_config() -> dict[str, Any]:
    """A reduced configuration (few channels, small kernels, 32x32 feature volume) with the same code paths.

    For tests and memory benchmarks on a CPU; it cannot load the published weights.
    """
    cfg = json.loads(json.dumps(default_config()))
    cfg["appearance_feature_extractor"].update(block_expansion=8, num_down_blocks=3, max_features=32,
                                               reshape_channel=2, num_resblocks=1)
    cfg["motion_extractor"].update(dims=[8, 16, 32, 64], depths=[1, 1, 1, 1])
    cfg["warping_module"].update(block_expansion=8, max_features=32, reshape_channel=2)
    cfg["warping_module"]["dense_motion_params"].update(block_expansion=2, max_features=16, compress=1,
                                                        mask_kernel_size=3, occlusion_kernel_size=3)
    cfg["spade_generator"].update(block_expansion=8, max_features=32, out_channels=8, spade_hidden=8)
    return cfg


class AppearanceFeatureExtractor(nn.Module):
    """F: source image ``[B,3,256,256]`` in 0..1 -> appearance volume ``[B,32,16,64,64]``."""

    def __init__(self, image_channel: int, block_expansion: int, num_down_blocks: int, max_features: int,
                 reshape_channel: int, reshape_depth: int, num_resblocks: int):
        super().__init__()
        self.first = ConvNormAct(image_channel, block_expansion)
        chans = [min(max_features, block_expansion * 2 ** i) for i in range(num_down_blocks + 1)]
        self.down_blocks = nn.ModuleList(ConvNormAct(chans[i], chans[i + 1], down=True)
                                         for i in range(num_down_blocks))
        self.second = nn.Conv2d(chans[-1], max_features, kernel_size=1)
        self.resblocks_3d = nn.Sequential()
        for i in range(num_resblocks):
            self.resblocks_3d.add_module(f"3dr{i}", ResBlock3d(reshape_channel))
        self.reshape_channel, self.reshape_depth = reshape_channel, reshape_depth

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.first(image)
        for block in self.down_blocks:
            x = block(x)
        x = self.second(x)
        b, _, h, w = x.shape
        return self.resblocks_3d(x.view(b, self.reshape_channel, self.reshape_depth, h, w))


class ConvNeXtV2Detector(nn.Module):
    """ConvNeXt-V2 backbone with LivePortrait's heads (keypoints, pose bins, translation, expression, scale)."""

    def __init__(self, num_kp: int, num_bins: int, in_chans: int, depths: list[int], dims: list[int]):
        super().__init__()
        self.downsample_layers = nn.ModuleList([
            nn.Sequential(nn.Conv2d(in_chans, dims[0], kernel_size=4, stride=4), ChannelLayerNorm(dims[0]))])
        for i in range(len(dims) - 1):
            self.downsample_layers.append(nn.Sequential(
                ChannelLayerNorm(dims[i]), nn.Conv2d(dims[i], dims[i + 1], kernel_size=2, stride=2)))
        self.stages = nn.ModuleList(nn.Sequential(*[ConvNeXtBlock(dims[i]) for _ in range(depths[i])])
                                    for i in range(len(dims)))
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        c = dims[-1]
        self.fc_kp = nn.Linear(c, 3 * num_kp)
        self.fc_scale = nn.Linear(c, 1)
        self.fc_pitch = nn.Linear(c, num_bins)
        self.fc_yaw = nn.Linear(c, num_bins)
        self.fc_roll = nn.Linear(c, num_bins)
        self.fc_t = nn.Linear(c, 3)
        self.fc_exp = nn.Linear(c, 3 * num_kp)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        for down, stage in zip(self.downsample_layers, self.stages):
            x = stage(down(x))
        x = self.norm(x.mean([-2, -1]))
        return {"pitch": self.fc_pitch(x), "yaw": self.fc_yaw(x), "roll": self.fc_roll(x), "t": self.fc_t(x),
                "exp": self.fc_exp(x), "scale": self.fc_scale(x), "kp": self.fc_kp(x)}


class MotionExtractor(nn.Module):
    """M: image ``[B,3,256,256]`` -> raw pose bins (66 each), t, exp (63), scale, canonical kp (63)."""

    def __init__(self, **cfg: Any):
        super().__init__()
        self.detector = ConvNeXtV2Detector(**cfg)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.detector(x)


class DenseMotionNetwork(nn.Module):
    """Predicts the dense 3-D deformation and occlusion map from source and driving keypoints."""

    def __init__(self, block_expansion: int, num_blocks: int, max_features: int, num_kp: int,
                 feature_channel: int, reshape_depth: int, compress: int, estimate_occlusion_map: bool = True,
                 mask_kernel_size: int = 7, occlusion_kernel_size: int = 7):
        super().__init__()
        self.hourglass = Hourglass(block_expansion, (num_kp + 1) * (compress + 1), num_blocks, max_features)
        self.mask = nn.Conv3d(self.hourglass.out_filters, num_kp + 1, kernel_size=mask_kernel_size,
                              padding=mask_kernel_size // 2)
        self.compress = nn.Conv3d(feature_channel, compress, kernel_size=1)
        self.norm = nn.BatchNorm3d(compress, affine=True)
        self.occlusion = (nn.Conv2d(self.hourglass.out_filters * reshape_depth, 1, kernel_size=occlusion_kernel_size,
                                    padding=occlusion_kernel_size // 2)
                          if estimate_occlusion_map else None)
        self.num_kp = num_kp

    def forward(self, feature: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor
                ) -> dict[str, torch.Tensor]:
        feature = F.relu(self.norm(self.compress(feature)), inplace=True)  # [B,4,d,h,w]
        b, c, d, h, w = feature.shape
        k = self.num_kp
        grid = coordinate_grid(d, h, w, kp_source)[None, None]  # [1,1,d,h,w,3]
        # Each keypoint contributes a translation field moving driving positions onto source positions.
        shifted = grid - kp_driving.view(b, k, 1, 1, 1, 3) + kp_source.view(b, k, 1, 1, 1, 3)
        motions = torch.cat([grid.expand(b, 1, d, h, w, 3), shifted], dim=1)  # [B,K+1,d,h,w,3]
        deformed = F.grid_sample(
            feature[:, None].expand(b, k + 1, c, d, h, w).reshape(b * (k + 1), c, d, h, w),
            motions.reshape(b * (k + 1), d, h, w, 3), align_corners=False).view(b, k + 1, c, d, h, w)
        heat = keypoint_gaussians(kp_driving, d, h, w) - keypoint_gaussians(kp_source, d, h, w)
        heat = torch.cat([heat.new_zeros(b, 1, d, h, w), heat], dim=1)[:, :, None]
        x = torch.cat([heat, deformed], dim=2).view(b, -1, d, h, w)
        pred = self.hourglass(x)
        mask = F.softmax(self.mask(pred), dim=1)  # [B,K+1,d,h,w]
        deformation = (motions * mask[..., None]).sum(dim=1)  # [B,d,h,w,3]
        out = {"mask": mask, "deformation": deformation}
        if self.occlusion is not None:
            out["occlusion_map"] = torch.sigmoid(self.occlusion(pred.reshape(b, -1, pred.shape[-2], pred.shape[-1])))
        return out


class WarpingNetwork(nn.Module):
    """W: warps the appearance volume by the keypoint motion -> 2-D feature ``[B,256,64,64]``."""

    def __init__(self, num_kp: int, block_expansion: int, max_features: int, num_down_blocks: int,
                 reshape_channel: int, estimate_occlusion_map: bool, dense_motion_params: dict[str, Any]):
        super().__init__()
        self.dense_motion_network = DenseMotionNetwork(num_kp=num_kp, feature_channel=reshape_channel,
                                                       estimate_occlusion_map=estimate_occlusion_map,
                                                       **dense_motion_params)
        ch = block_expansion * 2 ** num_down_blocks
        self.third = ConvNormAct(max_features, ch, leaky=True)
        self.fourth = nn.Conv2d(ch, ch, kernel_size=1)

    def forward(self, feature_3d: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor
                ) -> dict[str, torch.Tensor | None]:
        motion = self.dense_motion_network(feature_3d, kp_driving, kp_source)
        occlusion = motion.get("occlusion_map")
        out = F.grid_sample(feature_3d, motion["deformation"], align_corners=False)
        b, c, d, h, w = out.shape
        out = self.fourth(self.third(out.view(b, c * d, h, w)))
        if occlusion is not None:
            out = out * occlusion
        return {"occlusion_map": occlusion, "deformation": motion["deformation"], "out": out}


class SPADEGenerator(nn.Module):
    """G: warped feature ``[B,256,64,64]`` -> image ``[B,3,512,512]`` in 0..1."""

    def __init__(self, upscale: int, block_expansion: int, max_features: int, num_down_blocks: int,
                 out_channels: int = 64, spade_hidden: int = 128):
        super().__init__()
        ch = min(max_features, block_expansion * 2 ** num_down_blocks)
        self.fc = nn.Conv2d(ch, 2 * ch, 3, padding=1)
        for i in range(6):
            setattr(self, f"G_middle_{i}", SPADEResBlock(2 * ch, 2 * ch, ch, spade_hidden))
        self.up_0 = SPADEResBlock(2 * ch, ch, ch, spade_hidden)
        self.up_1 = SPADEResBlock(ch, out_channels, ch, spade_hidden)
        if upscale and upscale > 1:
            self.conv_img = nn.Sequential(nn.Conv2d(out_channels, 3 * upscale * upscale, 3, padding=1),
                                          nn.PixelShuffle(upscale))
        else:
            self.conv_img = nn.Conv2d(out_channels, 3, 3, padding=1)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        x = self.fc(feature)
        for i in range(6):
            x = getattr(self, f"G_middle_{i}")(x, feature)
        x = self.up_0(F.interpolate(x, scale_factor=2.0), feature)
        x = self.up_1(F.interpolate(x, scale_factor=2.0), feature)
        return torch.sigmoid(self.conv_img(F.leaky_relu(x, 0.2)))


class StitchingRetargeting(nn.Module):
    """S and R: stitching MLP (126->65), lip MLP (65->63), eye MLP (66->63)."""

    def __init__(self, stitching: dict[str, Any], lip: dict[str, Any], eye: dict[str, Any]):
        super().__init__()
        self.stitching = MLP(**stitching)
        self.lip = MLP(**lip)
        self.eye = MLP(**eye)


def build_network(name: str, config: dict[str, Any] | None = None) -> nn.Module:
    """Build one network (random weights, eval mode) from its hyper-parameters."""
    if name not in NETWORK_NAMES:
        raise ValueError(f"unknown LivePortrait network '{name}', expected one of {NETWORK_NAMES}")
    cfg = (config or default_config())[name]
    cls = {"appearance_feature_extractor": AppearanceFeatureExtractor, "motion_extractor": MotionExtractor,
           "warping_module": WarpingNetwork, "spade_generator": SPADEGenerator,
           "stitching_retargeting_module": StitchingRetargeting}[name]
    return cls(**cfg).eval()
