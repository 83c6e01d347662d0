"""HiFT, the CosyVoice 2 vocoder: 80-bin mel at 50 frames/s -> 24 kHz waveform.

A neural source-filter HiFi-GAN with an iSTFT head (HiFTNet), written for this pack after the
reference (FunAudioLLM/CosyVoice ace7c47, ``cosyvoice/hifigan/generator.py``) as its CosyVoice 2
runtime uses it (``CosyVoice2Model.token2wav`` -> ``HiFTGenerator.inference``):

1. ``ConvRNNF0Predictor``: five weight-normalised 3-tap convs with ELU, a linear layer, ``abs``:
   one F0 value (Hz) per mel frame.
2. The NSF source. F0 is repeated to the sample rate (x480 = 8*5*3 upsampling times the iSTFT hop
   4); at 24 kHz the reference picks its ``SineGen2`` (``sinegen_type`` is '1' only at 22.05 kHz):
   the per-sample phase increment of 9 harmonics is linearly down-sampled to the frame rate,
   accumulated there, scaled back and linearly up-sampled, so the phase is a cumulative sum over
   frames, not samples. Voiced samples (F0 > ``nsf_voiced_threshold``) carry 0.1-amplitude sines
   plus noise of std ``nsf_sigma``; unvoiced ones only noise of std 0.1/3. A 9 -> 1 linear layer and
   ``tanh`` merge the harmonics. In streaming, the head of the source is replaced by the previous
   chunk's ``cache_source`` so the excitation stays continuous across chunks.
3. The filter: conv_pre, three transposed-conv up-samplings (8, 5, 3), each followed by the source's
   STFT (n_fft 16, hop 4) brought down to that rate and added, and three multi-kernel ResBlocks with
   Snake activations; conv_post gives 9 log-magnitudes and 9 phases; ``torch.istft``; clamp to
   ``audio_limit``.

The reference draws three random tensors per call, in this order: an initial phase per harmonic
(``rand``; it is added to the first sample only, which the 1/480 linear down-sampling never reads
for any length, so it cannot change the output), the sine-branch noise (``randn``, [B, L, 9]) and a
noise-branch tensor (``randn``, [B, L, 1]) that HiFT never uses. :meth:`HiFTGenerator.inference`
draws the same three from a ``torch.Generator`` (the global one when none is given), so a
generator seeded like ``torch.manual_seed(s)`` before a reference call gives the reference's
numbers; ``source_noise`` feeds explicit values instead.

Weights: ``hift.pt`` as published (a flat state dict; 82 weight-normalised convs stored as
``weight_g``/``weight_v`` or, from current torch, ``parametrizations.weight.original0/1``; any
``generator.`` substring removed, as the reference's loader does). The weight norm is folded once
at load time with the same ``torch._weight_norm`` the reference evaluates on every call, so the
folded weights are bit-identical to the ones the reference convolves with.

Precision: :meth:`HiFTGenerator.set_precision` runs the filter convs in fp16/bf16; the F0
predictor, the source (its phase is a long cumulative sum), the STFT/iSTFT and the magnitude
``exp`` always stay fp32, so a half-precision run cannot overflow into inf/NaN there.
"""
from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

WN_NAMINGS = ("weight_norm", "parametrizations")
_WN_SUFFIX = {
    "weight_norm": ("weight_g", "weight_v"),
    "parametrizations": ("parametrizations.weight.original0", "parametrizations.weight.original1"),
}


# --------------------------------------------------------------------------------------------
# building blocks


class WNConv1d(nn.Conv1d):
    """A Conv1d whose published weight is stored weight-normalised (g, v); here it holds the folded
    weight. The class only marks the layer for the layout and the loader."""


class WNConvTranspose1d(nn.ConvTranspose1d):
    """A ConvTranspose1d stored weight-normalised in the published file (see :class:`WNConv1d`)."""


WN_LAYERS = (WNConv1d, WNConvTranspose1d)


def periodic_hann(n: int) -> torch.Tensor:
    """``scipy.signal.get_window("hann", n, fftbins=True)`` (computed in float64) as float32, the
    window the reference's STFT/iSTFT use."""
    k = torch.arange(n, dtype=torch.float64)
    return (0.5 - 0.5 * torch.cos(2 * math.pi * k / n)).float()


def _same_padding(kernel: int, dilation: int) -> int:
    return (kernel * dilation - dilation) // 2


class Snake(nn.Module):
    """``x + sin(alpha x)^2 / alpha`` per channel (alpha on a linear scale, as HiFT's ResBlocks use it).

    In fp32 the operations are the reference's, in its order (``1/(alpha + 1e-9)`` first). In half
    precision the reciprocal is formed in fp32 and limited to the dtype's largest finite value,
    so a near-zero alpha cannot turn into inf and then NaN."""

    EPS = 1e-9

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = self.alpha.unsqueeze(0).unsqueeze(-1)
        if alpha.dtype == torch.float32:
            inv = 1.0 / (alpha + self.EPS)
        else:
            inv = (1.0 / (alpha.float() + self.EPS)).clamp(max=torch.finfo(alpha.dtype).max).to(alpha.dtype)
        if torch.is_grad_enabled() and (x.requires_grad or alpha.requires_grad):
            return x + inv * torch.pow(torch.sin(x * alpha), 2)
        # the same operations in place on one buffer (bit-identical, about twice as fast on a
        # CPU: Snake is half of HiFT's time and mostly memory traffic)
        s = torch.mul(x, alpha)
        s.sin_()
        s.mul_(s)
        s.mul_(inv)
        return s.add_(x)


class ResBlock(nn.Module):
    """HiFi-GAN residual block: per dilation, Snake -> dilated conv -> Snake -> conv, added back."""

    def __init__(self, channels: int, kernel: int, dilations: Sequence[int]):
        super().__init__()
        self.convs1 = nn.ModuleList(
            WNConv1d(channels, channels, kernel, 1, dilation=d, padding=_same_padding(kernel, d)) for d in dilations)
        self.convs2 = nn.ModuleList(
            WNConv1d(channels, channels, kernel, 1, dilation=1, padding=_same_padding(kernel, 1)) for _ in dilations)
        self.activations1 = nn.ModuleList(Snake(channels) for _ in dilations)
        self.activations2 = nn.ModuleList(Snake(channels) for _ in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c1, c2, a1, a2 in zip(self.convs1, self.convs2, self.activations1, self.activations2):
            x = c2(a2(c1(a1(x)))) + x
        return x


class ConvRNNF0Predictor(nn.Module):
    """Mel [B, 80, T] -> F0 [B, T] in Hz (non-negative)."""

    def __init__(self, num_class: int = 1, in_channels: int = 80, cond_channels: int = 512, layers: int = 5):
        super().__init__()
        mods: list[nn.Module] = []
        for i in range(layers):
            mods += [WNConv1d(in_channels if i == 0 else cond_channels, cond_channels, 3, padding=1), nn.ELU()]
        self.condnet = nn.Sequential(*mods)
        self.classifier = nn.Linear(cond_channels, num_class)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        h = self.condnet(mel).transpose(1, 2)
        return torch.abs(self.classifier(h).squeeze(-1))


class SourceModuleHnNSF(nn.Module):
    """Harmonic-plus-noise excitation from a sample-rate F0 (the reference's SineGen2, non-causal,
    followed by the harmonic merge). Only the merge layer has weights."""

    def __init__(self, sampling_rate: int, upsample_scale: int, harmonics: int, sine_amp: float,
                 noise_std: float, voiced_threshold: float):
        super().__init__()
        self.sampling_rate = sampling_rate
        self.upsample_scale = int(upsample_scale)
        self.dim = harmonics + 1
        self.sine_amp = sine_amp
        self.noise_std = noise_std
        self.voiced_threshold = voiced_threshold
        self.l_linear = nn.Linear(self.dim, 1)

    def draw_noise(self, batch: int, length: int, generator: torch.Generator | None,
                   device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The reference's three draws, in its order; returns (initial phases [B, dim], sine noise
        [B, L, dim]). The third draw (the unused noise branch) only advances the generator. A
        generator on another device than the model draws there and the values are moved."""
        dev = generator.device if generator is not None else device
        kw = {"generator": generator, "device": dev, "dtype": torch.float32}
        rand_ini = torch.rand(batch, self.dim, **kw)
        # the reference's randn_like(sines) keeps the sines' layout ([B, dim, L] transposed); torch
        # fills such a non-contiguous tensor element by element, with other numbers than a
        # contiguous randn of the same shape would get
        noise = torch.empty(batch, self.dim, length, device=dev).transpose(1, 2).normal_(generator=generator)
        torch.randn(batch, length, 1, **kw)
        return rand_ini.to(device), noise.to(device)

    def sines(self, f0: torch.Tensor, rand_ini: torch.Tensor) -> torch.Tensor:
        """Unit sines [B, L, dim] of F0 [B, L, 1] and its harmonics; the phase is accumulated at the
        frame rate (see the module docstring)."""
        harmonic = torch.arange(1, self.dim + 1, device=f0.device, dtype=torch.float32).view(1, 1, -1)
        rad = torch.multiply(f0, harmonic) / self.sampling_rate % 1
        ini = rand_ini.clone()
        ini[:, 0] = 0
        rad[:, 0, :] = rad[:, 0, :] + ini
        frames = F.interpolate(rad.transpose(1, 2), scale_factor=1 / self.upsample_scale, mode="linear")
        phase = torch.cumsum(frames, dim=2) * 2 * np.pi
        phase = F.interpolate(phase * self.upsample_scale, scale_factor=self.upsample_scale, mode="linear")
        return torch.sin(phase).transpose(1, 2)

    def forward(self, f0: torch.Tensor, rand_ini: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """F0 [B, L, 1] (fp32) -> merged source [B, L, 1]."""
        sine = self.sines(f0, rand_ini) * self.sine_amp
        uv = (f0 > self.voiced_threshold).type(torch.float32)
        amp = uv * self.noise_std + (1 - uv) * self.sine_amp / 3
        sine = sine * uv + amp * noise
        w, b = self.l_linear.weight.float(), self.l_linear.bias.float()
        return torch.tanh(F.linear(sine, w, b))


# --------------------------------------------------------------------------------------------
# the generator


class HiFTGenerator(nn.Module):
    """HiFT as CosyVoice 2 configures it (``hift`` section of ``cosyvoice2.json``). Submodule names
    and order follow the published state dict."""

    def __init__(self, cfg: dict[str, Any]):
        super().__init__()
        self.cfg = copy.deepcopy(cfg)
        ups_rates = list(cfg["upsample_rates"])
        self.n_fft = int(cfg["istft_params"]["n_fft"])
        self.hop = int(cfg["istft_params"]["hop_len"])
        self.upsample_scale = int(np.prod(ups_rates)) * self.hop
        self.sampling_rate = int(cfg["sampling_rate"])
        if self.sampling_rate == 22050:
            raise ValueError("HiFT: 22.05 kHz selects the reference's CosyVoice 1 source (SineGen), "
                             "which this implementation does not provide")
        self.lrelu_slope = float(cfg["lrelu_slope"])
        self.audio_limit = float(cfg["audio_limit"])
        self.num_kernels = len(cfg["resblock_kernel_sizes"])
        self.in_channels = int(cfg["in_channels"])
        base = int(cfg["base_channels"])

        self.m_source = SourceModuleHnNSF(self.sampling_rate, self.upsample_scale, int(cfg["nb_harmonics"]),
                                          float(cfg["nsf_alpha"]), float(cfg["nsf_sigma"]),
                                          float(cfg["nsf_voiced_threshold"]))
        self.conv_pre = WNConv1d(self.in_channels, base, 7, 1, padding=3)
        self.ups = nn.ModuleList(
            WNConvTranspose1d(base // 2 ** i, base // 2 ** (i + 1), k, u, padding=(k - u) // 2)
            for i, (u, k) in enumerate(zip(ups_rates, cfg["upsample_kernel_sizes"])))
        # the source STFT enters after each up-sampling, brought to that stage's rate
        cum = np.cumprod([1] + ups_rates[::-1][:-1])[::-1]
        spec_ch = self.n_fft + 2
        self.source_downs = nn.ModuleList()
        self.source_resblocks = nn.ModuleList()
        for i, (u, k, d) in enumerate(zip(cum, cfg["source_resblock_kernel_sizes"],
                                          cfg["source_resblock_dilation_sizes"])):
            ch, u = base // 2 ** (i + 1), int(u)
            self.source_downs.append(nn.Conv1d(spec_ch, ch, 1, 1) if u == 1
                                     else nn.Conv1d(spec_ch, ch, u * 2, u, padding=u // 2))
            self.source_resblocks.append(ResBlock(ch, k, d))
        self.resblocks = nn.ModuleList()
        for i in range(len(self.ups)):
            ch = base // 2 ** (i + 1)
            for k, d in zip(cfg["resblock_kernel_sizes"], cfg["resblock_dilation_sizes"]):
                self.resblocks.append(ResBlock(ch, k, d))
        self.conv_post = WNConv1d(ch, spec_ch, 7, 1, padding=3)
        fp = cfg["f0_predictor"]
        self.f0_predictor = ConvRNNF0Predictor(int(fp["num_class"]), int(fp["in_channels"]), int(fp["cond_channels"]))
        self.register_buffer("stft_window", periodic_hann(self.n_fft), persistent=False)

    # -- weights -------------------------------------------------------------------------

    def published_layout(self, naming: str = "weight_norm") -> dict[str, tuple[int, ...]]:
        """Key -> shape of the published ``hift.pt`` for this configuration, in the file's order,
        with the weight-normalised convs in ``naming`` (``weight_norm``: weight_g/weight_v;
        ``parametrizations``: parametrizations.weight.original0/1)."""
        if naming not in WN_NAMINGS:
            raise ValueError(f"unknown weight-norm naming {naming!r}; use one of {WN_NAMINGS}")
        g_name, v_name = _WN_SUFFIX[naming]
        out: dict[str, tuple[int, ...]] = {}
        for mname, mod in self.named_modules():
            pre = f"{mname}." if mname else ""
            for pname, p in mod.named_parameters(recurse=False):
                if isinstance(mod, WN_LAYERS) and pname == "weight":
                    continue
                out[pre + pname] = tuple(p.shape)
            if isinstance(mod, WN_LAYERS):
                w = tuple(mod.weight.shape)
                out[pre + g_name] = (w[0],) + (1,) * (len(w) - 1)
                out[pre + v_name] = w
        return out

    def weight_normed_layers(self) -> Iterator[str]:
        """Names of the convs whose published weights are weight-normalised."""
        return (n for n, m in self.named_modules() if isinstance(m, WN_LAYERS))

    def set_precision(self, dtype: torch.dtype) -> "HiFTGenerator":
        """Run the filter (conv_pre .. conv_post) in ``dtype``; F0 predictor, source and the
        spectral head stay fp32 (see the module docstring)."""
        for name, mod in self.named_children():
            if name not in ("m_source", "f0_predictor"):
                mod.to(dtype)
        self.m_source.float()
        self.f0_predictor.float()
        return self

    @property
    def filter_dtype(self) -> torch.dtype:
        return self.conv_pre.weight.dtype

    # -- inference -----------------------------------------------------------------------

    def predict_f0(self, mel: torch.Tensor) -> torch.Tensor:
        """F0 [B, T] (Hz) of a mel [B, 80, T], in fp32."""
        w = self.f0_predictor.classifier.weight
        return self.f0_predictor(mel.to(device=w.device, dtype=torch.float32))

    def source(self, f0: torch.Tensor, *, generator: torch.Generator | None = None,
               source_noise: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """The merged excitation [B, 1, T*480] of a frame-rate F0 [B, T]."""
        f0_up = F.interpolate(f0[:, None].float(), scale_factor=float(self.upsample_scale), mode="nearest")
        f0_up = f0_up.transpose(1, 2)
        b, length = f0_up.shape[0], f0_up.shape[1]
        if source_noise is None:
            rand_ini, noise = self.m_source.draw_noise(b, length, generator, f0_up.device)
        else:
            rand_ini, noise = (t.to(device=f0_up.device, dtype=torch.float32) for t in source_noise)
            if tuple(rand_ini.shape) != (b, self.m_source.dim) or tuple(noise.shape) != (b, length, self.m_source.dim):
                raise ValueError(f"HiFT source_noise: expected shapes [{b}, {self.m_source.dim}] and "
                                 f"[{b}, {length}, {self.m_source.dim}], got {list(rand_ini.shape)} "
                                 f"and {list(noise.shape)}")
        return self.m_source(f0_up, rand_ini, noise).transpose(1, 2)

    def _stft(self, s: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(s, self.n_fft, self.hop, self.n_fft, window=self.stft_window, return_complex=True)
        spec = torch.view_as_real(spec)
        return torch.cat([spec[..., 0], spec[..., 1]], dim=1)

    def _istft(self, magnitude: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
        magnitude = torch.clip(magnitude, max=1e2)
        spec = torch.complex(magnitude * torch.cos(phase), magnitude * torch.sin(phase))
        return torch.istft(spec, self.n_fft, self.hop, self.n_fft, window=self.stft_window)

    def decode(self, mel: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """Waveform [B, T*480] of a mel [B, 80, T] and its excitation [B, 1, T*480]."""
        dt = self.filter_dtype
        s_spec = self._stft(source.squeeze(1).float()).to(dt)
        x = self.conv_pre(mel.to(dt))
        last = len(self.ups) - 1
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, self.lrelu_slope))
            if i == last:
                x = F.pad(x, (1, 0), mode="reflect")
            x = x + self.source_resblocks[i](self.source_downs[i](s_spec))
            xs = None
            for j in range(self.num_kernels):
                y = self.resblocks[i * self.num_kernels + j](x)
                xs = y if xs is None else xs + y
            x = xs / self.num_kernels
        x = self.conv_post(F.leaky_relu(x)).float()  # default slope 0.01 here, as the reference
        half = self.n_fft // 2 + 1
        wave = self._istft(torch.exp(x[:, :half, :]), torch.sin(x[:, half:, :]))
        return torch.clamp(wave, -self.audio_limit, self.audio_limit)

    @torch.inference_mode()
    def inference(self, mel: torch.Tensor, cache_source: torch.Tensor | None = None, *,
                  generator: torch.Generator | None = None,
                  source_noise: tuple[torch.Tensor, torch.Tensor] | None = None,
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mel [B, 80, T] -> (speech [B, T*480] in [-audio_limit, audio_limit], source [B, 1, T*480]).

        ``cache_source`` ([B, 1, S], S <= T*480; None or S == 0 for none) replaces the first S source
        samples, as the reference's streaming does with the previous chunk's source tail; the
        returned source includes that splice. ``generator`` drives the noise draws (the global
        generator when None); ``source_noise`` = (initial phases [B, 9], sine noise [B, T*480, 9])
        gives them explicitly."""
        if mel.dim() != 3 or mel.shape[1] != self.in_channels or mel.shape[2] < 1:
            raise ValueError(f"HiFT: mel must be [batch, {self.in_channels}, frames >= 1], got {list(mel.shape)}")
        if not torch.isfinite(mel).all():
            raise ValueError("HiFT: mel contains NaN or inf")
        f0 = self.predict_f0(mel)
        s = self.source(f0, generator=generator, source_noise=source_noise)
        if cache_source is not None and cache_source.shape[-1] != 0:
            if cache_source.dim() != 3 or cache_source.shape[:2] != s.shape[:2] or cache_source.shape[2] > s.shape[2]:
                raise ValueError(f"HiFT: cache_source must be [{s.shape[0]}, 1, <= {s.shape[2]}] for this mel, "
                                 f"got {list(cache_source.shape)}")
            s[:, :, :cache_source.shape[2]] = cache_source.to(s)
        return self.decode(mel, s), s


# --------------------------------------------------------------------------------------------
# published weights


def normalise_hift_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Published-file keys -> the canonical ``weight_g``/``weight_v`` naming: any ``generator.``
    substring removed (as the reference's loader does), ``parametrizations.weight.original0/1``
    renamed."""
    g_new, v_new = _WN_SUFFIX["parametrizations"]
    out: dict[str, torch.Tensor] = {}
    for key, t in state.items():
        k = key.replace("generator.", "")
        if k.endswith("." + g_new):
            k = k[: -len(g_new)] + "weight_g"
        elif k.endswith("." + v_new):
            k = k[: -len(v_new)] + "weight_v"
        out[k] = t
    return out


def load_hift_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a published ``hift.pt`` (a flat state dict, read without executing code), keys
    normalised by :func:`normalise_hift_keys`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"HiFT weights file not found: {path}")
    try:
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:  # legacy (non-zip) pickles cannot be memory-mapped
            if "mmap" not in str(exc).lower() and "zip" not in str(exc).lower():
                raise
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path}: not a readable PyTorch weights file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: not a flat state dict of tensors (the published hift.pt is one)")
    return normalise_hift_keys(obj)


def check_hift_state(model: HiFTGenerator, state: dict[str, torch.Tensor], source: str) -> None:
    """Refuse a missing, unexpected or mis-shaped key (canonical naming); the error names the
    file, the first bad key and, for a shape, both shapes."""
    layout = model.published_layout("weight_norm")
    for k, shape in layout.items():
        if k not in state:
            n = sum(1 for x in layout if x not in state)
            raise ValueError(f"{source}: HiFT weights are missing key '{k}'" + (f" (and {n - 1} more)" if n > 1 else ""))
        if tuple(state[k].shape) != shape:
            raise ValueError(f"{source}: HiFT key '{k}' has shape {list(state[k].shape)}, the network needs {list(shape)}")
    extra = [k for k in state if k not in layout]
    if extra:
        raise ValueError(f"{source}: HiFT weights have unexpected key '{extra[0]}'"
                         + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""))


def fold_weight_norm(model: HiFTGenerator, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The module's own state dict from canonical published weights: each weight-normalised conv's
    weight = ``torch._weight_norm(v, g, 0)`` in fp32, the computation torch's weight norm does."""
    out = dict(state)
    for name in model.weight_normed_layers():
        g, v = out.pop(f"{name}.weight_g"), out.pop(f"{name}.weight_v")
        out[f"{name}.weight"] = torch._weight_norm(v.float(), g.float(), 0)
    return {k: v.float() for k, v in out.items()}


def build_hift(cfg: dict[str, Any], state: dict[str, torch.Tensor], source: str = "hift weights") -> HiFTGenerator:
    """A HiFT for ``cfg`` holding ``state`` (published keys in either naming, strict), in eval mode."""
    with torch.device("meta"):
        model = HiFTGenerator(cfg)
    state = normalise_hift_keys(state)
    check_hift_state(model, state, source)
    model.load_state_dict(fold_weight_norm(model, state), strict=True, assign=True)
    model.stft_window = periodic_hann(model.n_fft)
    return model.eval().requires_grad_(False)


def load_hift(path: str | Path, cfg: dict[str, Any] | None = None) -> HiFTGenerator:
    """HiFT from a published ``hift.pt`` (``cfg``: the ``hift`` section; the published one when None)."""
    if cfg is None:
        from .config import load_config

        cfg = load_config()["hift"]
    return build_hift(cfg, load_hift_state_dict(path), source=str(path))
