"""CosyVoice 2's HiFT vocoder and prompt features, ours against the reference implementation.

    python scripts/cosyvoice_reference_hift.py --reference DIR [--seconds 4] [--write-fixtures]

DIR is a checkout of FunAudioLLM/CosyVoice (with ``third_party/Matcha-TTS``) that the user
provides; it is imported at run time only and nothing of it is part of this repository. Run it
with a Python that has the reference's dependencies (torch, torchaudio, hyperpyyaml, librosa,
openai-whisper).

What is compared (max abs differences printed):

1. HiFT at full size (the published ``hift`` configuration, 20.8 M parameters): the reference is
   built by hyperpyyaml from the ``hift:`` section of its own ``cosyvoice2.yaml`` and loads a
   ``hift.pt`` of seeded random weights the way its runtime does (``generator.`` stripped,
   ``strict=True``); ours loads the same file through ``load_hift``. Both vocode the same mel (the
   reference's Matcha mel of real speech) with the same noise (``torch.manual_seed(s)`` before the
   reference call, a ``torch.Generator`` seeded ``s`` for ours): F0, source and waveform; then a
   stream of chunks as ``CosyVoice2Model.token2wav`` feeds HiFT (8 cached mel frames, 3840 cached
   source samples).
2. The prompt features on real speech (``eng.wav``, ``yongen.wav`` of the shared test media, found at
   ``$DH_SHARED/testdata`` or ``../shared/testdata``):
   resampling (the reference's ``load_wav`` step, ``torchaudio.transforms.Resample`` after the
   channel mean), Matcha's ``mel_spectrogram`` with the ``feat_extractor`` settings, whisper's
   ``log_mel_spectrogram(n_mels=128)`` and Kaldi fbank (80 bins, dither 0, mean-subtracted).

``--write-fixtures`` also writes ``tests/fixtures/cosyvoice/hift_reference.npz`` (small
configuration, its seed, a mel, the noise seeds, the reference's F0 / source / waveform for two
streamed chunks, and the source of a made-up F0 track with unvoiced frames) and
``features_reference.npz`` (a 0.5 s synthetic 48 kHz clip, made here, and the
reference's three features of it), which the unit tests compare against.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

import _pack  # noqa: F401  (registers comfyui_digitalhuman; scripts/ is on sys.path)
from comfyui_digitalhuman.engine.cosyvoice import features as FE
from comfyui_digitalhuman.engine.cosyvoice import hift as H
from comfyui_digitalhuman.engine.cosyvoice import random_hift as R

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "cosyvoice"
TESTDATA = Path(os.environ.get("DH_SHARED", REPO.parent / "shared")) / "testdata"
HIFT_SEED = 7
SMALL_SEED = 11
MEL_CACHE, SOURCE_CACHE = 8, 8 * 480


def import_reference(ref_dir: Path):
    """The reference's modules, imported from the user's checkout."""
    for need in ("cosyvoice/hifigan/generator.py", "third_party/Matcha-TTS/matcha/utils/audio.py",
                 "examples/libritts/cosyvoice2/conf/cosyvoice2.yaml"):
        if not (ref_dir / need).is_file():
            sys.exit(f"--reference {ref_dir}: {need} not found (a FunAudioLLM/CosyVoice checkout with submodules?)")
    sys.path[:0] = [str(ref_dir), str(ref_dir / "third_party" / "Matcha-TTS")]
    import torchaudio
    import torchaudio.compliance.kaldi as kaldi
    import whisper
    from cosyvoice.hifigan import f0_predictor as rf
    from cosyvoice.hifigan import generator as rg
    from hyperpyyaml import load_hyperpyyaml
    from matcha.utils.audio import mel_spectrogram

    return dict(torchaudio=torchaudio, kaldi=kaldi, whisper=whisper, rg=rg, rf=rf,
                load_hyperpyyaml=load_hyperpyyaml, mel_spectrogram=mel_spectrogram)


def reference_hift_from_yaml(ref, ref_dir: Path):
    """The reference's HiFT as its published yaml builds it (only the ``hift:`` section and the
    ``sample_rate`` it refers to are read: the data-pipeline entries need packages HiFT does not)."""
    text = (ref_dir / "examples/libritts/cosyvoice2/conf/cosyvoice2.yaml").read_text(encoding="utf-8")
    keep, lines = False, []
    for line in text.splitlines():
        if re.match(r"^[A-Za-z_]", line):
            keep = line.startswith(("hift:", "sample_rate:"))
        if keep:
            lines.append(line)
    return ref["load_hyperpyyaml"]("\n".join(lines))["hift"]


def reference_hift_direct(ref, cfg: dict):
    """The reference's classes built directly (for the small configuration)."""
    kw = {k: v for k, v in cfg.items() if k != "f0_predictor"}
    return ref["rg"].HiFTGenerator(**kw, f0_predictor=ref["rf"].ConvRNNF0Predictor(**cfg["f0_predictor"]))


def reference_load(model, path: Path):
    """As ``CosyVoiceModel.load`` loads hift.pt."""
    state = {k.replace("generator.", ""): v for k, v in torch.load(str(path), map_location="cpu", weights_only=True).items()}
    model.load_state_dict(state, strict=True)
    return model.eval()


def ref_load_wav(ref, wave: np.ndarray, sr: int, target: int) -> torch.Tensor:
    """The reference's ``load_wav`` after its file read (torchaudio's soundfile backend gives the
    same float32 samples as soundfile): channel mean, then ``transforms.Resample``."""
    speech = torch.from_numpy(wave.T.copy()).mean(dim=0, keepdim=True)
    if sr != target:
        speech = ref["torchaudio"].transforms.Resample(orig_freq=sr, new_freq=target)(speech)
    return speech


def ref_features(ref, s16: torch.Tensor, s24: torch.Tensor) -> dict[str, torch.Tensor]:
    mel = ref["mel_spectrogram"](s24, n_fft=1920, num_mels=80, sampling_rate=24000, hop_size=480, win_size=1920,
                                 fmin=0, fmax=8000, center=False).squeeze(dim=0).transpose(0, 1).unsqueeze(0)
    wh = ref["whisper"].log_mel_spectrogram(s16, n_mels=128)
    fb = ref["kaldi"].fbank(s16, num_mel_bins=80, dither=0, sample_frequency=16000)
    return {"prompt_mel": mel, "whisper_log_mel": wh, "campplus_fbank": fb - fb.mean(dim=0, keepdim=True)}


def our_features(s16: torch.Tensor, s24: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"prompt_mel": FE.prompt_mel(s24), "whisper_log_mel": FE.whisper_log_mel(s16),
            "campplus_fbank": FE.campplus_fbank(s16)}


def diff(a: torch.Tensor, b: torch.Tensor) -> str:
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    if a.shape != b.shape:
        return f"SHAPES DIFFER {list(a.shape)} vs {list(b.shape)}"
    d = (a - b).abs().max().item()
    return f"max abs {d:.3g} (max |ref| {b.abs().max().item():.3g}, {'identical' if d == 0 else 'differs'})"


def compare_hift_full(ref, ref_dir: Path, seconds: float) -> None:
    print(f"== HiFT, full size, seed {HIFT_SEED}")
    cfg = R.published_config()
    with tempfile.TemporaryDirectory() as tmp:
        path = R.write_random_hift(Path(tmp) / "hift.pt", cfg, seed=HIFT_SEED, prefix="generator.")
        t = time.perf_counter()
        theirs = reference_load(reference_hift_from_yaml(ref, ref_dir), path)
        t_ref = time.perf_counter() - t
        t = time.perf_counter()
        ours = H.load_hift(path)
        t_ours = time.perf_counter() - t
    n = sum(p.numel() for p in theirs.parameters())
    print(f"  parameters: reference {n:,}, ours {sum(p.numel() for p in ours.parameters()):,} (weight norm "
          f"folded: the 82 magnitudes g are inside the weights); "
          f"load {t_ref * 1e3:.0f} ms (reference) / {t_ours * 1e3:.0f} ms (ours)")
    wave, sr = sf.read(str(TESTDATA / "eng.wav"), dtype="float32", always_2d=True)
    s24 = ref_load_wav(ref, wave[: int(seconds * sr)], sr, 24000)
    mel = ref["mel_spectrogram"](s24, n_fft=1920, num_mels=80, sampling_rate=24000, hop_size=480, win_size=1920,
                                 fmin=0, fmax=8000, center=False)
    print(f"  mel: Matcha mel of {seconds:g} s of eng.wav, {list(mel.shape)}")
    with torch.inference_mode():
        f_ref, f_ours = theirs.f0_predictor(mel), ours.predict_f0(mel)
    print(f"  F0 predictor: {diff(f_ours, f_ref)}")
    torch.manual_seed(1234)
    t = time.perf_counter()
    sp_ref, src_ref = theirs.inference(speech_feat=mel)
    t_ref = time.perf_counter() - t
    t = time.perf_counter()
    sp_ours, src_ours = ours.inference(mel, generator=torch.Generator().manual_seed(1234))
    t_ours = time.perf_counter() - t
    print(f"  source: {diff(src_ours, src_ref)}")
    print(f"  waveform: {diff(sp_ours, sp_ref)}  [{sp_ref.shape[1]} samples; one call {t_ref * 1e3:.0f} ms "
          f"reference / {t_ours * 1e3:.0f} ms ours]")
    # explicit noise: ours given the values the reference drew, through the public argument
    torch.manual_seed(99)
    sp_ref2, _ = theirs.inference(speech_feat=mel)
    noise = ours.m_source.draw_noise(1, mel.shape[2] * 480, torch.Generator().manual_seed(99), torch.device("cpu"))
    sp_ours2, _ = ours.inference(mel, source_noise=noise)
    print(f"  waveform, explicit source_noise: {diff(sp_ours2, sp_ref2)}")
    # streaming as CosyVoice2Model.token2wav drives HiFT: mel cache of 8 frames, source cache 3840
    edges = [0, 40, 90, 150, mel.shape[2]]
    cache_mel = cache_src_r = cache_src_o = None
    worst_w = worst_s = 0.0
    for k, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
        chunk = mel[:, :, a:b]
        if cache_mel is not None:
            chunk = torch.cat([cache_mel, chunk], dim=2)
        torch.manual_seed(500 + k)
        w_r, s_r = theirs.inference(speech_feat=chunk, cache_source=cache_src_r if cache_src_r is not None else torch.zeros(1, 1, 0))
        w_o, s_o = ours.inference(chunk, cache_src_o, generator=torch.Generator().manual_seed(500 + k))
        worst_w = max(worst_w, (w_r - w_o).abs().max().item())
        worst_s = max(worst_s, (s_r - s_o).abs().max().item())
        cache_mel, cache_src_r, cache_src_o = chunk[:, :, -MEL_CACHE:], s_r[:, :, -SOURCE_CACHE:], s_o[:, :, -SOURCE_CACHE:]
    print(f"  streamed in {len(edges) - 1} chunks with mel/source caches: waveform max abs {worst_w:.3g}, "
          f"source max abs {worst_s:.3g}")


def compare_features(ref) -> None:
    print("== prompt features on real speech")
    for name, limit in (("eng.wav", 30.0), ("yongen.wav", None)):
        wave, sr = sf.read(str(TESTDATA / name), dtype="float32", always_2d=True)
        if limit:
            wave = wave[: int(limit * sr)]
        print(f"  {name}: {sr} Hz, {wave.shape[1]} channel(s), {wave.shape[0] / sr:.1f} s")
        r16, r24 = ref_load_wav(ref, wave, sr, 16000), ref_load_wav(ref, wave, sr, 24000)
        o16, o24 = FE.prompt_speech(wave.T, sr, 16000), FE.prompt_speech(wave.T, sr, 24000)
        if sr != 16000:
            print(f"    resample to 16 kHz: {diff(o16, r16)}")
        print(f"    resample to 24 kHz: {diff(o24, r24)}")
        theirs, ours = ref_features(ref, r16, r24), our_features(r16, r24)
        for key in theirs:
            print(f"    {key} {list(ours[key].shape)}: {diff(ours[key], theirs[key])}")


def synthetic_clip(sr: int = 48000, seconds: float = 0.5) -> np.ndarray:
    """A made-up 'syllable' as int16: a voiced part with gliding pitch and falling harmonics, a
    noise burst, then near-silence, so every feature sees voiced, noisy and quiet frames."""
    rng = np.random.default_rng(2024)
    t = np.arange(int(sr * seconds)) / sr
    f0 = 110.0 + 160.0 * t
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voiced = sum(np.sin(k * phase) / k for k in range(1, 30) if k * 190 < 6000)
    env = np.clip(t / 0.03, 0, 1) * np.clip((0.3 - t) / 0.05, 0, 1)
    burst = np.diff(rng.standard_normal(t.size + 1)) * ((t > 0.31) & (t < 0.4))
    y = 0.35 * voiced * env + 0.15 * burst + 1e-4 * rng.standard_normal(t.size)
    return np.round(np.clip(y, -1, 1) * 32767).astype(np.int16)


def write_fixtures(ref) -> None:
    FIXTURES.mkdir(parents=True, exist_ok=True)
    clip = synthetic_clip()
    wave = (clip.astype(np.float32) / 32768.0)[:, None]
    s16, s24 = ref_load_wav(ref, wave, 48000, 16000), ref_load_wav(ref, wave, 48000, 24000)
    feats = ref_features(ref, s16, s24)
    raw_fbank = ref["kaldi"].fbank(s16, num_mel_bins=80, dither=0, sample_frequency=16000)
    np.savez_compressed(FIXTURES / "features_reference.npz", clip_48k_int16=clip,
                        resampled_16k=s16.numpy(), resampled_24k=s24.numpy(), campplus_fbank_raw=raw_fbank.numpy(),
                        **{k: v.numpy() for k, v in feats.items()})
    # HiFT, small configuration, two streamed chunks
    cfg = R.small_config()
    theirs = reference_hift_direct(ref, cfg)
    theirs.load_state_dict(R.random_hift_state_dict(cfg, SMALL_SEED), strict=True)
    theirs.eval()
    mel = feats["prompt_mel"].transpose(1, 2)[:, :, :18].contiguous()
    out = {"seed": np.int64(SMALL_SEED), "mel": mel.numpy(), "chunk1_frames": np.array([0, 12]),
           "chunk2_frames": np.array([12 - MEL_CACHE, 18]), "source_cache": np.int64(SOURCE_CACHE),
           "noise_seeds": np.array([101, 102, 103])}
    m1, m2 = mel[:, :, 0:12], mel[:, :, 12 - MEL_CACHE:18]
    with torch.inference_mode():
        out["f0_1"], out["f0_2"] = theirs.f0_predictor(m1).numpy(), theirs.f0_predictor(m2).numpy()
    torch.manual_seed(101)
    sp1, s1 = theirs.inference(speech_feat=m1)
    torch.manual_seed(102)
    sp2, s2 = theirs.inference(speech_feat=m2, cache_source=s1[:, :, -SOURCE_CACHE:])
    out.update(speech_1=sp1.numpy(), source_1=s1.numpy(), speech_2=sp2.numpy(), source_2=s2.numpy())
    # the source alone for a made-up F0 track with unvoiced frames (0 and below the threshold)
    f0 = torch.tensor([[0.0, 0.0, 95.0, 120.0, 180.0, 240.0, 9.0, 0.0, 130.0, 310.0]])
    torch.manual_seed(103)
    with torch.inference_mode():
        crafted, _, _ = theirs.m_source(theirs.f0_upsamp(f0[:, None]).transpose(1, 2))
    out.update(f0_crafted=f0.numpy(), source_crafted=crafted.transpose(1, 2).numpy())
    # a fingerprint of the noise the reference drew, so a platform whose torch RNG differs is named
    for k, (seed, length) in enumerate(((101, m1.shape[2] * 480), (102, m2.shape[2] * 480), (103, 4800)), start=1):
        torch.manual_seed(seed)
        ini = torch.rand(1, 9)
        noise = torch.randn_like(torch.empty(1, 9, length).transpose(1, 2))
        out[f"noise_{k}_head"] = noise[0, :4].numpy()
        out[f"noise_{k}_abs_sum"] = np.float64(noise.double().abs().sum())
        out[f"rand_ini_{k}"] = ini.numpy()
    np.savez_compressed(FIXTURES / "hift_reference.npz", **out)
    for f in ("features_reference.npz", "hift_reference.npz"):
        print(f"wrote {FIXTURES / f} ({(FIXTURES / f).stat().st_size:,} bytes)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reference", required=True, type=Path, help="a FunAudioLLM/CosyVoice checkout (with Matcha-TTS)")
    ap.add_argument("--seconds", type=float, default=4.0, help="seconds of eng.wav to vocode at full size")
    ap.add_argument("--write-fixtures", action="store_true", help="rewrite the unit tests' reference fixtures")
    ap.add_argument("--skip-full", action="store_true", help="skip the full-size HiFT comparison")
    args = ap.parse_args()
    ref = import_reference(args.reference.resolve())
    if not args.skip_full:
        compare_hift_full(ref, args.reference.resolve(), args.seconds)
    compare_features(ref)
    if args.write_fixtures:
        write_fixtures(ref)


if __name__ == "__main__":
    main()
