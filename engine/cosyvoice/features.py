"""The three features CosyVoice 2 computes from a voice prompt, as the reference's front end does
(FunAudioLLM/CosyVoice ace7c47, ``cosyvoice/cli/frontend.py``):

- :func:`prompt_mel`: the flow's prompt mel at 24 kHz (``_extract_speech_feat``: Matcha-TTS's
  ``mel_spectrogram`` with the ``feat_extractor`` settings: reflect padding of (n_fft - hop) / 2,
  Hann window, ``center=False``, magnitude ``sqrt(re^2 + im^2 + 1e-9)``, librosa's Slaney mel
  basis, ``log(max(x, 1e-5))``), returned [1, T, 80];
- :func:`whisper_log_mel`: the speech tokenizer's input at 16 kHz (``_extract_speech_token``:
  openai-whisper's ``log_mel_spectrogram(audio, n_mels=128)``: centred STFT n_fft 400 / hop 160
  with a Hann window, the last frame dropped, power, Whisper's mel filters (librosa's Slaney
  filters for sr 16000 / n_fft 400, which are exactly what Whisper ships in ``mel_filters.npz``),
  ``log10(max(x, 1e-10))``, floored at the maximum minus 8, ``(x + 4) / 4``), [1, 128, T];
- :func:`campplus_fbank`: the speaker embedding's input at 16 kHz (``_extract_spk_embedding``:
  Kaldi fbank via ``torchaudio.compliance.kaldi.fbank``, 80 bins, dither 0, then the mean over
  time subtracted), [T, 80].

Audio reaches them as the reference's ``load_wav`` makes it: channels averaged, then resampled
with torchaudio's ``transforms.Resample`` (windowed sinc, Hann, 6 zero crossings, roll-off 0.99,
kernel computed in float64 and kept as float32), the very resampler the reference calls, so the
resampled prompt is the reference's sample for sample (:func:`prompt_speech`). Unlike the
reference, which refuses prompts below 16 kHz, any rate is accepted (a low-rate prompt is up-sampled;
it only lacks the high band).

Everything runs on the CPU in float32: prompts are short and the ONNX networks that read two of
these features run on the CPU as well.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .config import load_config


@lru_cache(maxsize=1)
def _cfg() -> dict[str, Any]:
    cfg = load_config()
    return {"mel": cfg["feat_extractor"], "frontend": cfg["frontend"]}


def _mono_float(wave: torch.Tensor | np.ndarray, what: str) -> torch.Tensor:
    """[N] or [C, N] -> float32 [1, N] on the CPU, channels averaged; refuses empty or non-finite audio."""
    w = torch.as_tensor(wave).detach().to("cpu", torch.float32)
    if w.dim() == 1:
        w = w[None]
    if w.dim() != 2:
        raise ValueError(f"{what}: audio must be [samples] or [channels, samples], got shape {list(w.shape)}")
    if w.shape[1] == 0 or w.shape[0] == 0:
        raise ValueError(f"{what}: the audio is empty")
    if not torch.isfinite(w).all():
        raise ValueError(f"{what}: the audio contains NaN or inf samples")
    return w.mean(dim=0, keepdim=True) if w.shape[0] > 1 else w


@lru_cache(maxsize=16)
def _resampler(orig_sr: int, new_sr: int):
    import torchaudio

    return torchaudio.transforms.Resample(orig_freq=orig_sr, new_freq=new_sr)


def resample(wave: torch.Tensor, orig_sr: int, new_sr: int) -> torch.Tensor:
    """``wave`` [..., N] from ``orig_sr`` to ``new_sr`` with the reference's resampler (see the
    module docstring); unchanged when the rates are equal."""
    if int(orig_sr) <= 0 or int(new_sr) <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_sr} -> {new_sr}")
    if int(orig_sr) == int(new_sr):
        return wave
    with torch.no_grad():
        return _resampler(int(orig_sr), int(new_sr))(wave)


def prompt_speech(wave: torch.Tensor | np.ndarray, sample_rate: int, target_sr: int,
                  what: str = "prompt audio") -> torch.Tensor:
    """The reference's ``load_wav``: channels averaged, resampled to ``target_sr``; float32 [1, N]."""
    return resample(_mono_float(wave, what), sample_rate, target_sr)


@lru_cache(maxsize=4)
def _mel_basis(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None) -> torch.Tensor:
    import librosa

    return torch.from_numpy(librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)).float()


def prompt_mel(speech_24k: torch.Tensor | np.ndarray) -> torch.Tensor:
    """The flow's prompt features: [1, T, 80] with T = N // 480 for N 24 kHz samples."""
    c = _cfg()["mel"]
    y = _mono_float(speech_24k, "prompt audio (24 kHz)")
    n_fft, hop, win = int(c["n_fft"]), int(c["hop_size"]), int(c["win_size"])
    pad = int((n_fft - hop) / 2)
    if y.shape[1] <= pad:
        raise ValueError(f"prompt audio (24 kHz): {y.shape[1]} samples is too short for the prompt mel "
                         f"(needs more than {pad}, {pad / int(c['sampling_rate']) * 1000:.0f} ms)")
    y = F.pad(y.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
    spec = torch.stft(y, n_fft, hop_length=hop, win_length=win, window=torch.hann_window(win),
                      center=bool(c["center"]), pad_mode="reflect", normalized=False, onesided=True,
                      return_complex=True)
    mag = torch.sqrt(torch.view_as_real(spec).pow(2).sum(-1) + 1e-9)
    fmax = None if c["fmax"] is None else float(c["fmax"])
    mel = torch.matmul(_mel_basis(int(c["sampling_rate"]), n_fft, int(c["num_mels"]), float(c["fmin"]), fmax), mag)
    return torch.log(torch.clamp(mel, min=1e-5)).transpose(1, 2)


def whisper_log_mel(speech_16k: torch.Tensor | np.ndarray, n_mels: int | None = None) -> torch.Tensor:
    """The speech tokenizer's input: [1, n_mels, T] with T = N // 160 for N 16 kHz samples."""
    fe = _cfg()["frontend"]
    n_mels = int(fe["speech_tokenizer_n_mels"]) if n_mels is None else int(n_mels)
    n_fft, hop = int(fe["whisper_n_fft"]), int(fe["whisper_hop_length"])
    audio = _mono_float(speech_16k, "prompt audio (16 kHz)")
    if audio.shape[1] <= n_fft // 2:
        raise ValueError(f"prompt audio (16 kHz): {audio.shape[1]} samples is too short for the speech "
                         f"tokenizer's mel (needs more than {n_fft // 2})")
    spec = torch.stft(audio, n_fft, hop, window=torch.hann_window(n_fft), return_complex=True)
    power = spec[..., :-1].abs() ** 2
    mel = _mel_basis(int(fe["speech_tokenizer_sample_rate"]), n_fft, n_mels, 0.0, None) @ power
    log_spec = torch.clamp(mel, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - float(fe["whisper_log10_range"]))
    return (log_spec + 4.0) / 4.0


def campplus_fbank(speech_16k: torch.Tensor | np.ndarray) -> torch.Tensor:
    """The speaker embedding's input: Kaldi fbank [T, 80] (25 ms / 10 ms frames, T = 1 + (N - 400)
    // 160), mean-subtracted over time."""
    import torchaudio.compliance.kaldi as kaldi

    if kaldi.EPSILON.is_meta:
        # torchaudio was first imported inside some code's ``torch.device("meta")`` block (another
        # node pack's, say): its float epsilon then has no data. Remake it, as torchaudio defines it.
        kaldi.EPSILON = torch.tensor(torch.finfo(torch.float).eps)
    fe = _cfg()["frontend"]
    audio = _mono_float(speech_16k, "prompt audio (16 kHz)")
    sr = int(fe["campplus_sample_rate"])
    frame = int(sr * 0.025)
    if audio.shape[1] < frame:
        raise ValueError(f"prompt audio (16 kHz): {audio.shape[1]} samples is shorter than one 25 ms "
                         f"fbank frame ({frame} samples)")
    feat = kaldi.fbank(audio, num_mel_bins=int(fe["campplus_num_mel_bins"]), dither=float(fe["campplus_dither"]),
                       sample_frequency=sr)
    return feat - feat.mean(dim=0, keepdim=True)
