"""Parity of our LatentSync pieces with the reference implementation (bytedance/LatentSync), one machine.

    python scripts/latentsync_reference.py --reference /path/to/LatentSync [--checks unet,deepcache,audio,align,e2e]
        [--full-unet] [--mask /path/to/mask.png] [--write-fixture tests/fixtures/latentsync/reference_parity.npz]

DIR is a checkout of bytedance/LatentSync that the user provides (its model code needs diffusers
0.32, einops, omegaconf and kornia in the running Python); it is imported at run time only and
nothing of it is part of this repository. Modules the compared code paths never call but that the
reference imports at load time (InsightFace, decord, imageio, ffmpeg-python) are replaced by
stand-ins when they are not installed. Both sides get the same seeded random weights (our tiny
configuration of the published architecture, or the full size with ``--full-unet``) and the same
inputs, and run in float32 on the CPU; the reference's ``AlignRestore`` defaults to float16, so it
is built with ``dtype=torch.float32`` here.

Checks (each prints the largest absolute difference, ours vs the reference):

* ``mask``: the checkout's ``latentsync/utils/mask.png`` has the catalogue entry's sha256, and our
  reading of it equals the reference's ``load_fixed_mask`` at 512 and 256 px;
* ``unet``: one denoising step (13-channel input, 16 frames, guidance batch of 2, audio tokens);
  ``--full-unet`` adds the published size (1.27 B parameters, one shared set of weights, a tiny
  latent);
* ``deepcache``: 20 DDIM steps with feature reuse against the reference UNet wrapped by
  DeepCache's ``DeepCacheSDHelper`` (``cache_interval=3, cache_branch_id=0``), when the
  ``DeepCache`` package is installed;
* ``audio``: Whisper tiny features per video frame (``Audio2Feature`` on an OpenAI-format
  checkpoint with random weights) of ``yongen.wav``;
* ``align``: the alignment transforms of a real face track (our 468-point mesh mapped to the three
  points), the aligned crops, and the paste-back;
* ``e2e``: the whole ``LipsyncPipeline.__call__`` on the first 32 frames of ``d20.mp4`` and 1.28 s
  of ``eng.wav`` with a fixed seed (its face detector replaced by our points, its file reading and
  writing by the same arrays), final composited frames compared: at 256 px with a stand-in mask
  (what the unit tests can rebuild), and with ``--real-mask-512`` at 512 px with the reference's
  ``mask.png``.

``--write-fixture`` stores small slices of the reference's outputs for ``tests/unit/test_latentsync_parity.py``.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.machinery
import math
import os
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _pack  # noqa: E402,F401  (registers comfyui_digitalhuman)

from comfyui_digitalhuman.engine.latentsync import align as A  # noqa: E402
from comfyui_digitalhuman.engine.latentsync import audio as AU  # noqa: E402
from comfyui_digitalhuman.engine.latentsync import config as C  # noqa: E402
from comfyui_digitalhuman.engine.latentsync import pipeline as P  # noqa: E402
from comfyui_digitalhuman.engine.latentsync import random_models as R  # noqa: E402
from comfyui_digitalhuman.engine.latentsync.ddim import DDIM  # noqa: E402
from comfyui_digitalhuman.engine.latentsync.unet import FeatureReuse  # noqa: E402

TESTDATA = Path(os.environ.get("DH_SHARED", Path(__file__).resolve().parents[2] / "shared")) / "testdata"
CHECKS = ("mask", "unet", "deepcache", "audio", "align", "e2e")


def _stand_in(name: str, **attrs: Any) -> None:
    """Put a module into ``sys.modules`` if importing the real one fails (the compared paths never call it)."""
    try:
        importlib.import_module(name)
    except Exception as e:  # noqa: BLE001
        print(f"[ref] {name} not importable ({type(e).__name__}); using a stand-in", file=sys.stderr)
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            sub = ".".join(parts[:i])
            if sub not in sys.modules:
                mod = types.ModuleType(sub)
                mod.__spec__ = importlib.machinery.ModuleSpec(sub, None)
                sys.modules[sub] = mod
            if i > 1:
                setattr(sys.modules[".".join(parts[:i - 1])], parts[i - 1], sys.modules[sub])
        sys.modules[name].__dict__.update(attrs)


def import_reference(ref_dir: Path) -> None:
    ref_dir = ref_dir.resolve()
    if not (ref_dir / "latentsync" / "models" / "unet.py").is_file():
        raise SystemExit(f"--reference {ref_dir}: not a LatentSync checkout (latentsync/models/unet.py missing)")
    sys.path.insert(0, str(ref_dir))
    _stand_in("insightface.app", FaceAnalysis=None)
    _stand_in("decord", AudioReader=None, VideoReader=None)
    _stand_in("imageio")
    _stand_in("ffmpeg")


def maxdiff(a: Any, b: Any) -> float:
    a = a.detach().float().cpu().numpy() if torch.is_tensor(a) else np.asarray(a, np.float64)
    b = b.detach().float().cpu().numpy() if torch.is_tensor(b) else np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise AssertionError(f"shapes differ: {a.shape} vs {b.shape}")
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max()) if a.size else 0.0


def reference_unet(cfg: dict, state: dict[str, torch.Tensor]):
    """The reference's UNet3DConditionModel with ``state`` assigned (shared storage, no copy)."""
    from latentsync.models.unet import UNet3DConditionModel as Ref

    with torch.device("meta"):
        net = Ref.from_config(cfg)
    torch.nn.Module.load_state_dict(net, state, strict=True, assign=True)
    return net.eval().requires_grad_(False)


def unet_inputs(frames: int, size: int, seed: int = 123, cfg: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    b = 2 if cfg else 1
    x = torch.randn(b, 13, frames, size, size, generator=g)
    audio = torch.randn(b * frames, 50, 384, generator=g)
    if cfg:
        audio[:frames] = 0
    return x, audio


def check_unet(full: bool, out: dict) -> None:
    cfg = C.unet_config(tiny=True)
    ours = R.random_unet(tiny=True, seed=1)
    ref = reference_unet(cfg, ours.state_dict())
    x, audio = unet_inputs(16, 8)
    t = torch.tensor(951)
    with torch.no_grad():
        a = ours(x, t, audio)
        b = ref(x, t, encoder_hidden_states=audio).sample
    print(f"unet (tiny config, 16 frames, CFG batch 2): max |ours - ref| = {maxdiff(a, b):.3g} (max |ref| {b.abs().max():.3g})")
    out["unet_tiny_out"] = b.numpy()
    if full:
        t0 = time.time()
        with torch.device("meta"):
            ours_full = R.UNet3DConditionModel(C.unet_config())
        state = {}
        g = torch.Generator().manual_seed(7)
        for name, tensor in ours_full.state_dict().items():
            if name.endswith(R.KEEP):
                state[name] = _pe_for(name, ours_full)
            else:
                state[name] = torch.empty(tensor.shape)
                R.mnets.fill_random_(name, state[name], g, 0.02)
        ours_full.load_state_dict(state, strict=True, assign=True)
        ours_full.eval().requires_grad_(False)
        ref_full = reference_unet(C.unet_config(), state)
        xf, af = unet_inputs(2, 8, seed=5)
        with torch.no_grad():
            a = ours_full(xf, t, af)
            b = ref_full(xf, t, encoder_hidden_states=af).sample
        print(f"unet (published size, 1.27 B, 2 frames, 8x8 latent): max |ours - ref| = {maxdiff(a, b):.3g} "
              f"(max |ref| {b.abs().max():.3g}; {time.time() - t0:.0f} s)")
        del ours_full, ref_full, state


def reference_scheduler(ref_dir: Path):
    from diffusers import DDIMScheduler

    return DDIMScheduler.from_pretrained(str(ref_dir / "configs"))


def denoise(unet_call, scheduler_step, timesteps, latents, cond, guidance: float) -> torch.Tensor:
    """The reference's denoising loop (classifier-free guidance on a batch of 2)."""
    for j, t in enumerate(timesteps):
        x = torch.cat([torch.cat([latents] * 2)] + cond, dim=1)
        eps = unet_call(x, t, j)
        u, c = eps.chunk(2)
        latents = scheduler_step(u + guidance * (c - u), t, latents)
    return latents


def check_deepcache(ref_dir: Path, out: dict) -> None:
    """20 steps, guidance 1.5: plain and with feature reuse, ours vs the reference (+ DeepCache)."""
    cfg = C.unet_config(tiny=True)
    ours = R.random_unet(tiny=True, seed=1)
    ref = reference_unet(cfg, ours.state_dict())
    sched = reference_scheduler(ref_dir)
    sched.set_timesteps(20)
    mine = DDIM(20)
    print(f"ddim: timesteps equal {torch.equal(sched.timesteps, mine.timesteps)}; "
          f"alphas_cumprod max diff {maxdiff(sched.alphas_cumprod, mine.alphas_cumprod):.3g}")
    g = torch.Generator().manual_seed(9)
    latents = torch.randn(1, 4, 1, 8, 8, generator=g).repeat(1, 1, 16, 1, 1)
    cond = [torch.randn(2, 1, 16, 8, 8, generator=g), torch.randn(2, 4, 16, 8, 8, generator=g),
            torch.randn(2, 4, 16, 8, 8, generator=g)]
    _, audio = unet_inputs(16, 8, seed=10)

    def ref_step(e, t, x):
        return sched.step(e, t, x).prev_sample

    def our_step(e, t, x):
        return mine.step(e, int(t), x)

    b = denoise(lambda x, t, j: ref(x, t, encoder_hidden_states=audio).sample, ref_step, sched.timesteps, latents, cond, 1.5)
    a = denoise(lambda x, t, j: ours(x, t, audio), our_step, mine.timesteps, latents, cond, 1.5)
    print(f"20 DDIM steps, guidance 1.5 (tiny UNet): max |ours - ref| = {maxdiff(a, b):.3g} (max |ref| {b.abs().max():.3g})")
    out["ddim20_out"] = b.numpy()
    try:
        from DeepCache import DeepCacheSDHelper
    except ImportError:
        print("deepcache: the DeepCache package is not installed; feature reuse not compared")
        return
    reuse = FeatureReuse(3)
    a = denoise(lambda x, t, j: ours(x, t, audio, reuse=reuse, step_index=j), our_step, mine.timesteps, latents, cond, 1.5)
    helper = DeepCacheSDHelper(pipe=types.SimpleNamespace(unet=ref, scheduler=sched))
    helper.set_params(cache_interval=3, cache_branch_id=0)
    helper.enable()
    try:
        b = denoise(lambda x, t, j: ref(x, t, encoder_hidden_states=audio).sample, ref_step, sched.timesteps, latents,
                    cond, 1.5)
    finally:
        helper.disable()
    print(f"20 DDIM steps with feature reuse (DeepCache interval 3, branch 0): max |ours - ref| = {maxdiff(a, b):.3g} "
          f"(max |ref| {b.abs().max():.3g}; differs from no reuse by {maxdiff(b, out['ddim20_out']):.3g})")
    out["deepcache20_out"] = b.numpy()


def read_wav_16k(path: Path, seconds: float | None = None) -> np.ndarray:
    from comfyui_digitalhuman.engine.media.audio_io import load_audio

    wave, sr = load_audio(path, sample_rate=16000, mono=True)
    x = wave[0].astype(np.float32)
    return x[: int(seconds * 16000)] if seconds else x


def check_audio(workdir: Path, out: dict, samples: np.ndarray, tag: str = "") -> None:
    """Per-frame Whisper windows, ours vs ``Audio2Feature`` (same OpenAI-format checkpoint, same samples)."""
    from latentsync.whisper import audio2feature as ref_a2f
    from latentsync.whisper.whisper import audio as ref_audio

    from comfyui_digitalhuman.model_loaders.latentsync import load_whisper

    ckpt = workdir / "tiny.pt"
    if not ckpt.is_file():
        torch.save(R.whisper_checkpoint(seed=2), str(ckpt))
    ref_audio.load_audio = lambda _path, sr=16000: samples  # the reference reads files with ffmpeg
    filters = np.load(Path(ref_audio.__file__).parent / "assets" / "mel_filters.npz")["mel_80"]
    print(f"audio{tag}: mel filters max |librosa - reference asset| = {maxdiff(AU.mel_filters(), filters):.3g}")
    with contextlib.redirect_stdout(sys.stderr):
        enc = ref_a2f.Audio2Feature(model_path=str(ckpt), device="cpu", num_frames=16, audio_feat_length=[2, 2])
        feats = enc.audio2feat("speech.wav")
        chunks = torch.stack(enc.feature2chunks(feature_array=feats, fps=25))
    ours = AU.AudioFeatures(samples, load_whisper(ckpt), 25.0)
    mine = ours.windows(0, len(ours) + 2)
    n = len(ours)
    print(f"audio{tag}: {len(samples) / 16000:.2f} s -> {n} frames (reference {chunks.shape[0]}, two past the end); "
          f"windows max |ours - ref| = {maxdiff(mine, chunks):.3g} (max |ref| {chunks.abs().max():.3g})")
    out[f"audio{tag}_frames"] = np.array([n, chunks.shape[0]])
    out[f"audio{tag}_ref_sel"] = chunks[[0, 1, n // 2, n - 1, n + 1]][:, :, ::4].numpy()  # every 4th channel


def read_frames(path: Path, n: int) -> np.ndarray:
    import av

    out = []
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            out.append(f.to_ndarray(format="rgb24"))
            if len(out) == n:
                break
    return np.stack(out)


def face_points(frames: np.ndarray) -> list[np.ndarray]:
    """LatentSync's three points per frame from our face engine (the largest face, tracked)."""
    from comfyui_digitalhuman.engine.face.analyzer import FaceAnalyzer
    from comfyui_digitalhuman.engine.face.schemes import latentsync_points
    from comfyui_digitalhuman.engine.face.tracking import track_faces

    track = track_faces((frames[i:i + 16] for i in range(0, len(frames), 16)), FaceAnalyzer())
    if not track.present.all():
        raise SystemExit("the check clip must have a face in every frame")
    return [np.round(latentsync_points(track.landmarks[i]).astype(np.float64)) for i in range(len(frames))]


def check_align(frames: np.ndarray, points: list[np.ndarray], resolution: int, out: dict) -> None:
    """Transforms (with the temporal smoothing), aligned crops and paste-back, ours vs ``AlignRestore``."""
    import cv2
    from latentsync.utils.affine_transform import AlignRestore

    ref = AlignRestore(align_points=3, resolution=resolution, device="cpu", dtype=torch.float32)
    ours = P.align_points(points, resolution)
    tmpl = A.template(resolution)
    m_diff = crop_diff = 0.0
    crop_frac = []
    ref_mats, ref_crops = [], []
    for i, (frame, pts) in enumerate(zip(frames, points)):
        crop, mat = ref.align_warp_face(frame.copy(), landmarks3=pts, smooth=True)
        crop = cv2.resize(crop, (resolution, resolution), interpolation=cv2.INTER_LANCZOS4)
        mine = A.warp_face(frame, ours.matrices[i], tmpl, resolution)
        m_diff = max(m_diff, maxdiff(ours.matrices[i], mat[0]))
        d = np.abs(mine.astype(int) - crop.astype(int))
        crop_diff = max(crop_diff, float(d.max()))
        crop_frac.append(float((d > 0).mean()))
        ref_mats.append(mat[0].numpy())
        ref_crops.append(crop)
    print(f"align ({resolution} px, {len(frames)} frames): transforms max |ours - ref| = {m_diff:.3g}; crops (uint8) "
          f"max |diff| = {crop_diff:.0f}, {100 * max(crop_frac):.3f} % of values differ at most")
    g = torch.Generator().manual_seed(3)
    face = torch.rand(3, resolution, resolution, generator=g) * 2 - 1
    worst, frac = 0.0, 0.0
    pasted = []
    for i in (0, len(frames) // 2, len(frames) - 1):
        x1, y1, x2, y2 = 0, 0, tmpl.size[0], tmpl.size[1]
        import torchvision

        resized = torchvision.transforms.functional.resize(face, size=(y2 - y1, x2 - x1),
                                                           interpolation=torchvision.transforms.InterpolationMode.BICUBIC,
                                                           antialias=True)
        if i == 0:
            print(f"align: bicubic antialiased resize max |ours - torchvision| = "
                  f"{maxdiff(A.resize_face(face, x2 - x1, y2 - y1), resized):.3g}")
        r = ref.restore_img(frames[i], resized, torch.from_numpy(ref_mats[i])[None])
        mine = A.restore(frames[i], face, ours.matrices[i], tmpl)
        d = np.abs(mine.astype(int) - r.astype(int))
        worst, frac = max(worst, float(d.max())), max(frac, float((d > 0).mean()))
        pasted.append(r)
    print(f"align: paste-back (uint8 frames) max |diff| = {worst:.0f}, {100 * frac:.4f} % of values differ at most")
    out[f"align{resolution}_points"] = np.stack(points).astype(np.float32)
    out[f"align{resolution}_ref_mats"] = np.stack(ref_mats)
    sel = [0, len(frames) // 2, len(frames) - 1]
    step = resolution // 64
    out[f"align{resolution}_ref_crops_sub"] = np.stack([ref_crops[i][::step, ::step] for i in sel])
    out[f"align{resolution}_ref_paste_sum"] = np.array([p.astype(np.int64).sum() for p in pasted])


class _PointsDetector:
    """Stands in for the reference's InsightFace ``FaceDetector``: frame ``k`` of the run gets 106 landmarks
    whose entries at the indices the reference averages hold our three points, so its own
    ``affine_transform`` turns them into the same alignment points."""

    def __init__(self, points: list[np.ndarray]):
        self.points, self.k = points, 0

    def __call__(self, frame):
        lmk = np.zeros((106, 2))
        p = self.points[self.k % len(self.points)]
        lmk[[43, 48, 49, 51, 50]] = p[0]
        lmk[101:106] = p[1]
        lmk[[74, 77, 83, 86]] = p[2]
        self.k += 1
        return (0, 0, frame.shape[1], frame.shape[0]), lmk


def run_reference_pipeline(ref_dir: Path, frames: np.ndarray, points: list[np.ndarray], samples: np.ndarray,
                           state: dict, vae, whisper_ckpt: Path, mask_path: Path, resolution: int, seed: int,
                           steps: int, guidance: float, unet=None, num_frames: int = 16) -> np.ndarray:
    """``LipsyncPipeline.__call__`` with its file I/O and face detector replaced; returns its frames."""
    from latentsync.pipelines import lipsync_pipeline as LP
    from latentsync.utils import image_processor as IP
    from latentsync.utils.affine_transform import AlignRestore
    from latentsync.whisper import audio2feature as ref_a2f
    from latentsync.whisper.whisper import audio as ref_audio

    captured: dict[str, Any] = {}
    detector = _PointsDetector(points)

    class CpuImageProcessor(IP.ImageProcessor):
        def __init__(self, res, device="cpu", mask_image=None):
            super().__init__(res, device="cpu", mask_image=mask_image)
            self.restorer = AlignRestore(resolution=res, device="cpu", dtype=torch.float32)
            self.face_detector = detector

    LP.ImageProcessor = CpuImageProcessor
    LP.check_ffmpeg_installed = lambda: None
    LP.read_video = lambda path, use_decord=False: frames.copy()
    LP.read_audio = lambda path, audio_sample_rate=16000: torch.from_numpy(samples)
    LP.write_video = lambda path, video, fps: captured.__setitem__("frames", np.asarray(video))
    LP.sf = types.SimpleNamespace(write=lambda *a, **k: None)
    LP.subprocess = types.SimpleNamespace(run=lambda *a, **k: None)
    ref_audio.load_audio = lambda _path, sr=16000: samples
    with contextlib.redirect_stdout(sys.stderr):
        encoder = ref_a2f.Audio2Feature(model_path=str(whisper_ckpt), device="cpu", num_frames=num_frames,
                                        audio_feat_length=[2, 2])
        unet = unet if unet is not None else reference_unet(C.unet_config(tiny=True), state)
        pipe = LP.LipsyncPipeline(vae=vae, audio_encoder=encoder, unet=unet, scheduler=reference_scheduler(ref_dir))
        pipe.set_progress_bar_config(disable=True)
        torch.manual_seed(seed)
        with tempfile.TemporaryDirectory() as tmp:
            pipe(video_path="video.mp4", audio_path="speech.wav", video_out_path=str(Path(tmp) / "out.mp4"),
                 num_frames=num_frames, num_inference_steps=steps, guidance_scale=guidance, weight_dtype=torch.float32,
                 width=resolution, height=resolution, mask_image_path=str(mask_path), temp_dir=str(Path(tmp) / "t"))
    return captured["frames"]


def check_e2e(ref_dir: Path, work: Path, frames: np.ndarray, points: list[np.ndarray], mask_path: Path | None,
              resolution: int, out: dict, tag: str, steps: int = 20) -> None:
    from comfyui_digitalhuman.engine.latentsync.mask import lower_face_mask, read_mask
    from comfyui_digitalhuman.model_loaders.latentsync import load_whisper

    import cv2

    if mask_path is None:  # the stand-in the unit tests can rebuild (the real mask is not in the repository)
        mask_path = work / f"standin_{resolution}.png"
        cv2.imwrite(str(mask_path), (lower_face_mask(256) * 255).astype(np.uint8))
    ckpt = work / "tiny.pt"
    if not ckpt.is_file():
        torch.save(R.whisper_checkpoint(seed=2), str(ckpt))
    samples = read_wav_16k(TESTDATA / "eng.wav", len(frames) / 25)
    unet = R.random_unet(tiny=True, seed=1)
    vae = R.random_vae(tiny=True, seed=2)
    vae.config.scaling_factor, vae.config.shift_factor = 0.18215, 0  # as the reference's scripts/inference.py sets them
    seed, guidance = 1247, 1.5
    t0 = time.time()
    ref = run_reference_pipeline(ref_dir, frames, points, samples, unet.state_dict(), vae, ckpt, mask_path, resolution,
                                 seed, steps, guidance)
    t_ref = time.time() - t0
    models = P.LatentSyncModels(unet=unet, vae=vae, whisper=load_whisper(ckpt), mask=read_mask(mask_path, resolution),
                                version="1.6" if resolution == 512 else "1.5")
    t0 = time.time()
    align = P.align_points(points, resolution)
    ours = np.stack(list(P.lip_sync(models, frames, align, samples, P.SyncOptions(steps=steps, guidance=guidance, seed=seed))))
    t_ours = time.time() - t0
    n = len(ours)
    d = np.abs(ours.astype(int) - ref[:n].astype(int))
    changed = np.abs(ref[:n].astype(int) - frames[:n].astype(int)) > 0
    print(f"e2e{tag} ({resolution} px, {n} frames, {steps} steps, guidance {guidance}, seed {seed}): reference made "
          f"{len(ref)} frames; over the first {n}: max |ours - ref| = {d.max()}, {100 * (d > 0).mean():.3f} % of values "
          f"differ, mean |diff| {d.mean():.2e}; the lip sync changed {100 * changed.mean():.1f} % of values "
          f"(reference {t_ref:.0f} s, ours {t_ours:.0f} s)")
    box = A._footprint(A.invert(align.matrices[0]), *A.template(resolution).size, frames.shape[2], frames.shape[1], 0)
    x0, y0, x1, y1 = box
    out[f"e2e{tag}_box"] = np.array(box)
    out[f"e2e{tag}_ref_sub"] = ref[[0, n // 2, n - 1], y0:y1:2, x0:x1:2]
    out[f"e2e{tag}_ref_count"] = np.array([len(ref)])


def check_mask(mask_path: Path) -> None:
    """The catalogue's mask entry is the reference's file (sha256), and our reading equals its load_fixed_mask."""
    import hashlib

    from latentsync.utils.image_processor import load_fixed_mask

    from comfyui_digitalhuman.engine.latentsync.mask import read_mask
    from comfyui_digitalhuman.model_loaders.catalog import get_model

    entry = get_model("latentsync.mask")
    digest = hashlib.sha256(mask_path.read_bytes()).hexdigest()
    print(f"mask: {mask_path} sha256 {'equals' if digest == entry.sha256 else 'DIFFERS FROM'} the catalogue's "
          f"({mask_path.stat().st_size} bytes, catalogue {entry.size})")
    for res in (512, 256):
        ours = read_mask(mask_path, res)
        ref = load_fixed_mask(res, str(mask_path)).permute(1, 2, 0).numpy()
        print(f"mask at {res}: max |ours - reference load_fixed_mask| = {maxdiff(ours, ref):.3g}")


def _pe_for(name: str, model_on_meta) -> torch.Tensor:
    """The sinusoid table a PositionalEncoding of that buffer's width holds."""
    from comfyui_digitalhuman.engine.latentsync.blocks import PositionalEncoding

    shape = model_on_meta.get_buffer(name).shape
    return PositionalEncoding(shape[2], shape[1]).pe


def run_media_checks(args: argparse.Namespace, checks: list[str], work: Path, out: dict[str, np.ndarray]) -> None:
    """The checks on real media, their scratch files in ``work``."""
    if "audio" in checks:
        check_audio(work, out, read_wav_16k(TESTDATA / "yongen.wav"))
        check_audio(work, out, read_wav_16k(TESTDATA / "eng.wav", 33.0), "_long")  # two 30 s segments
    if "align" in checks or "e2e" in checks:
        clip = read_frames(TESTDATA / "d20.mp4", 32)
        points = face_points(clip)
    if "align" in checks:
        for res in (512, 256):
            check_align(clip, points, res, out)
    if "e2e" in checks:
        check_e2e(args.reference, work, clip, points, None, 256, out, "_standin")
        if args.real_mask_512:
            mask = args.mask or args.reference / "latentsync" / "utils" / "mask.png"
            check_e2e(args.reference, work, clip, points, mask, 512, {}, "_mask512")  # not for the fixture


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reference", type=Path, required=True, help="a checkout of bytedance/LatentSync")
    ap.add_argument("--checks", default=",".join(CHECKS), help=f"comma-separated subset of {','.join(CHECKS)}")
    ap.add_argument("--full-unet", action="store_true", help="also compare the published-size UNet (about 5 GB of RAM)")
    ap.add_argument("--mask", type=Path, help="the reference's latentsync/utils/mask.png (default: the checkout's)")
    ap.add_argument("--real-mask-512", action="store_true",
                    help="e2e: also run 1.6's 512 px path with the reference's own mask (slow: ~40 min on 2 cores)")
    ap.add_argument("--write-fixture", type=Path, help="write the reference's outputs for the unit tests here (.npz)")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    import_reference(args.reference)
    checks = [c.strip() for c in args.checks.split(",") if c.strip()]
    unknown = sorted(set(checks) - set(CHECKS))
    if unknown:
        raise SystemExit(f"unknown checks {unknown}; choose from {CHECKS}")
    out: dict[str, np.ndarray] = {}
    if "mask" in checks:
        check_mask(args.mask or args.reference / "latentsync" / "utils" / "mask.png")
    if "unet" in checks:
        check_unet(args.full_unet, out)
    if "deepcache" in checks:
        check_deepcache(args.reference, out)
    with tempfile.TemporaryDirectory(prefix="latentsync-ref-") as tmp:
        run_media_checks(args, checks, Path(tmp), out)
    if args.write_fixture:
        args.write_fixture.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(args.write_fixture, **out)
        print(f"wrote {args.write_fixture} ({args.write_fixture.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
