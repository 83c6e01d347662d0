"""CosyVoice 2 prompt features: against the reference's values (fixture) and against independent
float64 NumPy implementations on real speech from the shared test media.

``tests/fixtures/cosyvoice/features_reference.npz`` (from
``scripts/cosyvoice_reference_hift.py --write-fixtures``) holds a 0.5 s synthetic 48 kHz clip made
by that script (voiced glide, noise burst, near-silence), the reference's ``load_wav`` resampling
of it to 16 and 24 kHz (``torchaudio.transforms.Resample``), Matcha's ``mel_spectrogram``
(feat_extractor settings), openai-whisper's ``log_mel_spectrogram(n_mels=128)`` and Kaldi fbank
(raw and mean-subtracted) of those.

Tolerances. An fp32 FFT of length N has an error vector of norm at most c*log2(N)*u*||X||_2
(u = 2^-24, c a small constant), and ||X||_2 = sqrt(N)*||x||_2 for the windowed frame x
(Parseval). Rounding spreads that error over the N bins like noise, so one bin's share is about
c*log2(N)*u*||x||_2; we allow d = 40*log2(N)*u*||x||_2 per bin (c = 5 and eight times the RMS
share). A magnitude then moves by at most d, a power |X_k|^2 by 2|X_k| d + d^2; a mel bin sums
those with its weights B_jk, plus n*u of itself for the matmul; a log turns that into a relative
error, d log(e) <= d e / e. The bound is per element, computed from the data, so it is tight
where a bin holds energy and wide only where a bin's energy is tiny next to its frame's.
"""
from __future__ import annotations

from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch

from comfyui_digitalhuman.engine.cosyvoice import features as FE

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "cosyvoice" / "features_reference.npz"
U = 2.0 ** -24
C_BIN = 40.0  # see the module docstring


@pytest.fixture(scope="module")
def ref() -> dict:
    return dict(np.load(FIX))


def _frames(x: np.ndarray, n: int, hop: int) -> np.ndarray:
    count = 1 + (len(x) - n) // hop
    return np.stack([x[i * hop:i * hop + n] for i in range(count)])


def _hann(n: int, periodic: bool = True) -> np.ndarray:
    m = n if periodic else n - 1
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / m)


# -- independent float64 implementations (from the documented algorithms) -----------------------


def np_prompt_mel(y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Matcha mel_spectrogram (n_fft 1920, hop 480, win 1920, fmin 0, fmax 8000, center False):
    returns (log-mel [T, 80], linear mel [80, T], per-frame FFT error bound)."""
    y = np.pad(y.astype(np.float64), (720, 720), mode="reflect")
    fr = _frames(y, 1920, 480) * _hann(1920)
    spec = np.fft.rfft(fr, axis=1)
    mag = np.sqrt(spec.real ** 2 + spec.imag ** 2 + 1e-9)
    basis = librosa.filters.mel(sr=24000, n_fft=1920, n_mels=80, fmin=0, fmax=8000).astype(np.float64)
    mel = basis @ mag.T
    eps = C_BIN * np.log2(1920) * U * np.linalg.norm(fr, axis=1)
    return np.log(np.maximum(mel, 1e-5)).T, mel, eps


def prompt_mel_tolerance(mel: np.ndarray, eps: np.ndarray) -> np.ndarray:
    basis = librosa.filters.mel(sr=24000, n_fft=1920, n_mels=80, fmin=0, fmax=8000).astype(np.float64)
    d_mel = basis.sum(axis=1)[:, None] * eps[None] + 961 * U * mel
    return (d_mel / np.maximum(mel, 1e-5)).T + 4 * U * 12  # + rounding of log (|log| <= 12)


def np_whisper_log_mel(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """openai-whisper log_mel_spectrogram (n_fft 400, hop 160, centred with reflect padding, the
    last frame dropped), 128 bins; returns (features [128, T], per-element tolerance)."""
    y = np.pad(y.astype(np.float64), (200, 200), mode="reflect")
    fr = _frames(y, 400, 160)[:-1] * _hann(400)
    power = np.abs(np.fft.rfft(fr, axis=1)) ** 2
    basis = librosa.filters.mel(sr=16000, n_fft=400, n_mels=128).astype(np.float64)
    mel = basis @ power.T
    log = np.log10(np.maximum(mel, 1e-10))
    floor = log.max() - 8.0
    out = (np.maximum(log, floor) + 4.0) / 4.0
    d = C_BIN * np.log2(400) * U * np.linalg.norm(fr, axis=1)[:, None]
    d_power = 2 * np.sqrt(power) * d + d * d
    d_mel = basis @ d_power.T + 201 * U * mel
    d_log = d_mel / (np.log(10) * np.maximum(mel, 1e-10)) + 4 * U * 10
    d_log = np.maximum(d_log, d_log.flat[np.argmax(log)])  # the floor moves with the maximum
    return out, d_log / 4.0 + 2 * U


def kaldi_mel_banks(num_bins: int = 80, n_fft: int = 512, sr: int = 16000, low: float = 20.0
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Kaldi's triangular mel banks (mel = 1127 ln(1 + f/700)), [num_bins, n_fft/2 + 1], and a
    bound on the fp32 rounding of each weight: torchaudio forms them in fp32 as differences of mel
    values up to m_high, divided by the bin spacing delta, so a weight moves by about
    4*u*m_high/delta, wherever the triangle is non-zero or within rounding of its edges."""
    mel = lambda f: 1127.0 * np.log(1.0 + f / 700.0)  # noqa: E731
    high = sr / 2
    lo, hi = mel(low), mel(high)
    delta = (hi - lo) / (num_bins + 1)
    f = np.arange(n_fft // 2) * sr / n_fft
    m = mel(f)
    banks = np.zeros((num_bins, n_fft // 2 + 1))
    d_banks = np.zeros_like(banks)
    for b in range(num_bins):
        left, center, right = lo + b * delta, lo + (b + 1) * delta, lo + (b + 2) * delta
        tri = np.minimum((m - left) / (center - left), (right - m) / (right - center))
        banks[b, : n_fft // 2] = np.maximum(0.0, tri)
        d_banks[b, : n_fft // 2] = np.where(tri > -1e-3, 4 * U * hi / delta, 0.0)
    return banks, d_banks


def np_kaldi_fbank(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kaldi fbank as CAM++ is fed (25 ms / 10 ms frames, snip edges, DC removed, pre-emphasis 0.97,
    Povey window, FFT 512, power, 80 mel bins from 20 Hz, log with float32-epsilon floor);
    returns (raw log energies [T, 80], per-element tolerance of an fp32 computation)."""
    fr = _frames(y.astype(np.float64), 400, 160)
    fr = fr - fr.mean(axis=1, keepdims=True)
    # pre-emphasis cancels most of the low band, so its fp32 rounding (a few u of the frame
    # before it) is counted apart: 8*u*2*||frame||_2, white, i.e. that much in every bin
    d_time = 16 * U * np.linalg.norm(fr, axis=1)[:, None]
    prev = np.concatenate([fr[:, :1], fr[:, :-1]], axis=1)
    fr = (fr - 0.97 * prev) * _hann(400, periodic=False) ** 0.85
    power = np.abs(np.fft.rfft(fr, n=512, axis=1)) ** 2
    banks, d_banks = kaldi_mel_banks()
    e = power @ banks.T
    eps32 = float(np.finfo(np.float32).eps)
    d = C_BIN * np.log2(512) * U * np.linalg.norm(fr, axis=1)[:, None] + d_time
    d_e = (2 * np.sqrt(power) * d + d * d) @ banks.T + power @ d_banks.T + 257 * U * e
    return np.log(np.maximum(e, eps32)), d_e / np.maximum(e, eps32) + 4 * U * 16


# -- parity with the reference's values --------------------------------------------------------


def test_resampling_matches_reference(ref):
    """Same resampler as the reference: a sum of L kernel taps per output sample, which another
    summation order moves by at most L*u*||kernel||_1*max|x|."""
    clip = ref["clip_48k_int16"].astype(np.float32) / 32768.0
    for sr in (16000, 24000):
        got = FE.prompt_speech(clip, 48000, sr).numpy()
        kernel = FE._resampler(48000, sr).kernel
        tol = kernel.shape[-1] * U * float(kernel.abs().sum(dim=-1).max()) * float(np.abs(clip).max())
        np.testing.assert_allclose(got, ref[f"resampled_{sr // 1000}k"], rtol=0, atol=tol)
    # stereo: the channels are averaged first, as the reference's load_wav does
    # (x + 0.5x) / 2 and 0.75x differ by a few roundings of each input sample (<= 4u of max|x|), which the
    # kernel carries with gain <= ||kernel||_1; the two resamplings may also sum in other orders
    stereo = np.stack([clip, 0.5 * clip])
    kernel = FE._resampler(48000, 16000).kernel
    tol = (kernel.shape[-1] + 4) * U * float(kernel.abs().sum(dim=-1).max()) * float(np.abs(clip).max())
    np.testing.assert_allclose(FE.prompt_speech(stereo, 48000, 16000).numpy(),
                               FE.prompt_speech(0.75 * clip, 48000, 16000).numpy(), rtol=0, atol=tol)


def test_prompt_mel_matches_reference(ref):
    y = ref["resampled_24k"]
    got = FE.prompt_mel(torch.from_numpy(y)).numpy()
    assert got.shape == ref["prompt_mel"].shape == (1, y.shape[1] // 480, 80)
    _, mel, eps = np_prompt_mel(y[0])
    tol = prompt_mel_tolerance(mel, eps)
    assert np.all(np.abs(got[0] - ref["prompt_mel"][0]) <= tol)


def test_whisper_log_mel_matches_reference(ref):
    y = ref["resampled_16k"]
    got = FE.whisper_log_mel(torch.from_numpy(y)).numpy()
    assert got.shape == ref["whisper_log_mel"].shape == (1, 128, y.shape[1] // 160)
    _, tol = np_whisper_log_mel(y[0])
    assert np.all(np.abs(got[0] - ref["whisper_log_mel"][0]) <= tol)


def test_campplus_fbank_matches_reference(ref):
    y = ref["resampled_16k"]
    got = FE.campplus_fbank(torch.from_numpy(y)).numpy()
    assert got.shape == ref["campplus_fbank"].shape == (1 + (y.shape[1] - 400) // 160, 80)
    _, tol = np_kaldi_fbank(y[0])
    # mean subtraction: d(x - mean x) <= d x + mean |d x|
    tol = tol + tol.mean(axis=0, keepdims=True)
    assert np.all(np.abs(got - ref["campplus_fbank"]) <= tol)
    raw = ref["campplus_fbank_raw"]
    np.testing.assert_allclose(ref["campplus_fbank"], raw - raw.mean(axis=0, keepdims=True), rtol=0, atol=1e-5)


# -- real speech against independent computations -----------------------------------------------


@pytest.fixture(scope="module")
def speech(testdata):
    """8 s of eng.wav (16 kHz mono) and yongen.wav (48 kHz stereo), as float32 [C, N]."""
    out = {}
    for name in ("eng.wav", "yongen.wav"):
        x, sr = sf.read(str(testdata / name), dtype="float32", always_2d=True, frames=8 * 48000)
        out[name] = (x[: 8 * sr].T.copy(), sr)
    return out


def test_real_speech_features_match_independent_float64(speech):
    for name, (wave, sr) in speech.items():
        s16 = FE.prompt_speech(wave, sr, 16000)
        s24 = FE.prompt_speech(wave, sr, 24000)
        assert s16.shape == (1, wave.shape[1] * 16000 // sr) and s24.shape == (1, wave.shape[1] * 24000 // sr)
        y16, y24 = s16.numpy()[0], s24.numpy()[0]

        exact, mel, eps = np_prompt_mel(y24)
        got = FE.prompt_mel(s24).numpy()[0]
        assert got.shape == exact.shape == (len(y24) // 480, 80)
        assert np.all(np.abs(got - exact) <= prompt_mel_tolerance(mel, eps)), name

        exact, tol = np_whisper_log_mel(y16)
        got = FE.whisper_log_mel(s16).numpy()[0]
        assert got.shape == exact.shape == (128, len(y16) // 160)
        assert np.all(np.abs(got - exact) <= tol), name

        exact, tol = np_kaldi_fbank(y16)
        got = FE.campplus_fbank(s16).numpy()
        exact = exact - exact.mean(axis=0, keepdims=True)
        assert np.all(np.abs(got - exact) <= tol + tol.mean(axis=0, keepdims=True)), name
        # speech, not silence: the features span a real dynamic range
        assert np.ptp(got) > 10


def test_resampler_keeps_an_in_band_tone():
    """A 1 kHz tone keeps its amplitude and phase through 48 -> 16 and 48 -> 24 kHz away from the
    edges; the windowed sinc (6 zero crossings, roll-off 0.99) deviates by a few 1e-4 in band."""
    t = np.arange(48000) / 48000
    tone = np.sin(2 * np.pi * 1000 * t).astype(np.float32)
    for sr in (16000, 24000, 22050, 44100):
        got = FE.resample(torch.from_numpy(tone)[None], 48000, sr).numpy()[0]
        expect = np.sin(2 * np.pi * 1000 * np.arange(len(got)) / sr)
        assert len(got) == sr
        assert np.abs(got - expect)[200:-200].max() < 2e-3, sr
    up = FE.resample(torch.from_numpy(tone[:8000])[None], 8000, 16000)  # low rates are up-sampled
    assert up.shape == (1, 16000)


def test_bad_audio_is_refused_with_a_clear_error():
    with pytest.raises(ValueError, match="audio is empty"):
        FE.prompt_mel(torch.zeros(1, 0))
    with pytest.raises(ValueError, match="NaN or inf"):
        FE.whisper_log_mel(torch.tensor([0.0, float("nan")] * 300))
    with pytest.raises(ValueError, match=r"\[samples\] or \[channels, samples\]"):
        FE.campplus_fbank(torch.zeros(1, 2, 800))
    with pytest.raises(ValueError, match=r"too short for the prompt mel"):
        FE.prompt_mel(torch.zeros(1, 700))
    with pytest.raises(ValueError, match=r"too short for the speech tokenizer"):
        FE.whisper_log_mel(torch.zeros(150))
    with pytest.raises(ValueError, match=r"shorter than one 25 ms fbank frame \(400 samples\)"):
        FE.campplus_fbank(torch.zeros(399))
    with pytest.raises(ValueError, match="sample rates must be positive"):
        FE.resample(torch.zeros(1, 10), 0, 16000)
    # the shortest accepted inputs give the documented frame counts
    assert FE.prompt_mel(torch.full((721,), 0.01)).shape == (1, 1, 80)
    assert FE.whisper_log_mel(torch.full((201,), 0.01)).shape == (1, 128, 1)
    assert FE.campplus_fbank(torch.full((400,), 0.01)).shape == (1, 80)
