"""MuseTalk 1.5's real-time (avatar) path, ours against the reference implementation on one machine.

Used by ``bench_musetalk.py --reference DIR``, where DIR is a checkout of TMElyralab/MuseTalk that
the user provides: it is imported at run time only and nothing of it is part of this repository.

Both sides get the same inputs so the figures compare like with like:

- the same random weights, written once in the published file layouts (``musetalkV15/unet.pth``
  + ``musetalk.json``, an ``sd-vae-ft-mse`` diffusers folder, a ``whisper-tiny`` transformers
  folder, BiSeNet's ``79999_iter.pth``) and read by each side's own loader;
- the same prepared avatar: crops, latents, masks and boxes from our ``prepare_avatar``, written
  in the reference's avatar folder format (frames and masks as PNG, ``latents.pt``, ``coords.pkl``,
  ``mask_coords.pkl``) and read back by its ``Avatar`` class, so its face detection (mmpose) is
  never needed;
- the same audio file.

Stages timed per output frame: audio features, UNet, VAE decode, blend (resize + paste), and end
to end (the reference's ``Avatar.inference``, our ``speak``). Rounds alternate sides.

Two things differ from running the reference's script as is, neither in what is timed: its UNet
file is memory-mapped and assigned instead of copied into a second full-size network (so a
3.4 GB fp32 UNet fits the memory the benchmark may use; both sides then read the same pages),
and modules its speak path never calls but imports at load time (mmpose via its preprocessing,
omegaconf) are replaced by stand-ins when they are not installed.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import json
import os
import pickle
import shutil
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import soundfile as sf
import torch

import _pack  # noqa: F401  (registers comfyui_digitalhuman; scripts/ is on sys.path)
from comfyui_digitalhuman.engine.musetalk import audio as A
from comfyui_digitalhuman.engine.musetalk import blend as B
from comfyui_digitalhuman.engine.musetalk import networks as N
from comfyui_digitalhuman.engine.musetalk import pipeline as P
from comfyui_digitalhuman.engine.musetalk.random_models import random_models
from comfyui_digitalhuman.model_loaders import musetalk as L

FPS = 25
STAGES = ("audio_features", "unet", "vae_decode", "blend", "end_to_end")
AVATAR_ID = "dh_bench"


# ----------------------------------------------------------------------------- weights on disk

def _save_random_unet(path: Path, config: dict[str, Any], seed: int) -> None:
    """``unet.pth`` with the values ``randomize_(build_unet(config), seed)`` would give, written one
    file-backed tensor at a time so the full-size network is never held in memory."""
    with torch.device("meta"):
        net = N.build_unet(config)
    named = list(net.named_parameters()) + list(net.named_buffers())
    g = torch.Generator().manual_seed(seed)
    raw = Path(tempfile.mkdtemp(prefix="unet-raw-", dir=path.parent))
    try:
        state = {}
        for i, (name, t) in enumerate(named):
            buf = torch.from_file(str(raw / f"{i}.bin"), shared=True, size=max(t.numel(), 1), dtype=t.dtype)
            state[name] = buf[:t.numel()].view(t.shape)
            N.fill_random_(name, state[name], g)
        torch.save({k: state[k] for k in net.state_dict()}, str(path))
    finally:
        shutil.rmtree(raw, ignore_errors=True)


def write_weights(root: Path, tiny: bool, seed: int = 0) -> dict[str, Path]:
    """Random MuseTalk files in the published layouts under ``root`` (reused when already complete)."""
    files = {"unet": root / "musetalkV15" / "unet.pth", "unet_config": root / "musetalkV15" / "musetalk.json",
             "vae_dir": root / "sd-vae-ft-mse", "whisper_dir": root / "whisper-tiny",
             "face_parser": root / "face-parse-bisent" / "79999_iter.pth"}
    stamp = root / "complete.json"
    want = {"tiny": tiny, "seed": seed}
    if stamp.is_file() and json.loads(stamp.read_text()) == want:
        return files
    for p in files.values():
        (p if p.suffix == "" else p.parent).mkdir(parents=True, exist_ok=True)
    unet_cfg = N.TINY_UNET_CONFIG if tiny else N.UNET_CONFIG
    files["unet_config"].write_text(json.dumps(unet_cfg, indent=1))
    _save_random_unet(files["unet"], unet_cfg, seed)

    vae = N.randomize_(N.build_vae(N.TINY_VAE_CONFIG if tiny else None), seed + 1)
    vae.save_pretrained(str(files["vae_dir"]), safe_serialization=True)
    del vae

    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    whisper = WhisperForConditionalGeneration(WhisperConfig(**(N.TINY_WHISPER_CONFIG if tiny else N.WHISPER_TINY_CONFIG)))
    N.randomize_(whisper.model.encoder, seed + 2)
    whisper.save_pretrained(str(files["whisper_dir"]))
    WhisperFeatureExtractor().save_pretrained(str(files["whisper_dir"]))
    del whisper

    torch.save(random_models(tiny=True, seed=seed).parser.state_dict(), str(files["face_parser"]))
    stamp.write_text(json.dumps(want))
    return files


def load_ours(files: dict[str, Path]) -> P.MuseTalkModels:
    """Our networks through our loader (fp32, CPU)."""
    return L.load_musetalk(files["unet"], files["unet_config"], files["vae_dir"] / "diffusion_pytorch_model.safetensors",
                           files["whisper_dir"] / "model.safetensors", files["face_parser"],
                           vae_config=files["vae_dir"] / "config.json", whisper_config=files["whisper_dir"] / "config.json")


# ----------------------------------------------------------------------------- the reference, in process

def _stand_in(name: str, **attrs: Any) -> None:
    """Put a module into ``sys.modules`` if importing the real one fails (it is not used on the speak path)."""
    try:
        importlib.import_module(name)
    except Exception as e:  # noqa: BLE001 - any import failure (missing mmpose, mmcv build errors)
        print(f"[bench] reference: {name} not importable ({type(e).__name__}); using a stand-in", file=sys.stderr)
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        sys.modules[name] = mod


def _read_imgs(paths: list[str]) -> list[np.ndarray]:
    """What the reference's ``read_imgs`` does: BGR images as OpenCV reads them."""
    return [cv2.imread(p) for p in paths]


def _no_preparation(*_a: Any, **_k: Any) -> None:
    raise RuntimeError("avatar preparation is bypassed in this benchmark")


@contextlib.contextmanager
def _mmapped_unet_load(unet_module: types.ModuleType):
    """During the reference's UNet construction: build on ``meta`` and assign the memory-mapped file's
    tensors, instead of allocating a network and copying a second full set of weights into it."""
    real_cls, real_load = unet_module.UNet2DConditionModel, torch.load

    def build(**config: Any) -> torch.nn.Module:
        with torch.device("meta"):
            net = real_cls(**config)
        net.load_state_dict = functools.partial(net.load_state_dict, assign=True)
        return net

    unet_module.UNet2DConditionModel = build
    torch.load = functools.partial(real_load, mmap=True)
    try:
        yield
    finally:
        unet_module.UNet2DConditionModel, torch.load = real_cls, real_load


def _reference_script(ref_dir: Path) -> Path:
    script = ref_dir / "scripts" / "realtime_inference.py"
    if not script.is_file():
        raise SystemExit(f"--reference {ref_dir}: not a MuseTalk checkout (scripts/realtime_inference.py missing)")
    return script


def load_reference(ref_dir: Path, files: dict[str, Path], batch: int) -> types.ModuleType:
    """The reference's ``scripts/realtime_inference.py`` as a module, with the globals its ``Avatar`` reads
    set as its ``__main__`` block would (fp32 instead of its fp16 cast, CPU)."""
    ref_dir = ref_dir.resolve()
    script = _reference_script(ref_dir)
    sys.path.insert(0, str(ref_dir))
    _stand_in("omegaconf", OmegaConf=None)
    _stand_in("musetalk.utils.preprocessing", get_landmark_and_bbox=_no_preparation, read_imgs=_read_imgs)
    spec = importlib.util.spec_from_file_location("musetalk_reference_realtime", script)
    ref = importlib.util.module_from_spec(spec)
    with contextlib.redirect_stdout(sys.stderr):
        spec.loader.exec_module(ref)
        from musetalk.models import unet as ref_unet_module
        from musetalk.utils.utils import load_all_model
        from transformers import WhisperModel

        ref.args = argparse.Namespace(version="v15", extra_margin=P.EXTRA_MARGIN, audio_padding_length_left=A.PAD_LEFT,
                                      audio_padding_length_right=A.PAD_RIGHT, skip_save_images=True,
                                      parsing_mode="jaw", batch_size=batch)
        ref.device = torch.device("cpu")
        with _mmapped_unet_load(ref_unet_module):
            # vae_type is joined onto "models/": an absolute path replaces it
            ref.vae, ref.unet, ref.pe = load_all_model(unet_model_path=str(files["unet"]), vae_type=str(files["vae_dir"]),
                                                       unet_config=str(files["unet_config"]), device=ref.device)
        ref.timesteps = torch.tensor([0], device=ref.device)
        ref.audio_processor = ref.AudioProcessor(feature_extractor_path=str(files["whisper_dir"]))
        ref.weight_dtype = ref.unet.model.dtype
        ref.whisper = WhisperModel.from_pretrained(str(files["whisper_dir"])).to(device=ref.device, dtype=ref.weight_dtype).eval()
        ref.whisper.requires_grad_(False)
    return ref


def write_reference_avatar(workdir: Path, cache: P.AvatarCache) -> Path:
    """Our prepared avatar in the reference's avatar folder format (its ping-pong cycle order)."""
    if not cache.present.all():
        raise ValueError("the reference comparison needs a face in every avatar frame")
    base = workdir / "results" / "v15" / "avatars" / AVATAR_ID
    (base / "full_imgs").mkdir(parents=True, exist_ok=True)
    (base / "mask").mkdir(exist_ok=True)
    cycle = list(range(len(cache))) + list(range(len(cache)))[::-1]
    for k, j in enumerate(cycle):
        cv2.imwrite(str(base / "full_imgs" / f"{k:08d}.png"), np.ascontiguousarray(cache.frames[j][:, :, ::-1]))
        cv2.imwrite(str(base / "mask" / f"{k:08d}.png"), cache.masks[j])
    with open(base / "coords.pkl", "wb") as f:
        pickle.dump([[int(v) for v in cache.boxes[j]] for j in cycle], f)
    with open(base / "mask_coords.pkl", "wb") as f:
        pickle.dump([[int(v) for v in cache.regions[j]] for j in cycle], f)
    torch.save([cache.latents[j:j + 1].clone() for j in cycle], str(base / "latents.pt"))
    (base / "avator_info.json").write_text(json.dumps({"avatar_id": AVATAR_ID, "video_path": "", "bbox_shift": 0,
                                                       "version": "v15"}))
    return base


# ----------------------------------------------------------------------------- one timed round per side

def _reference_round(ref: types.ModuleType, avatar: Any, wav: Path, batch: int) -> tuple[dict, dict]:
    """Stage by stage with the reference's own functions, then ``Avatar.inference`` end to end."""
    t: dict[str, float] = {}
    s = time.perf_counter()
    feats, length = ref.audio_processor.get_audio_feature(str(wav), weight_dtype=ref.weight_dtype)
    chunks = ref.audio_processor.get_whisper_chunk(feats, ref.device, ref.weight_dtype, ref.whisper, length, fps=FPS,
                                                   audio_padding_length_left=A.PAD_LEFT,
                                                   audio_padding_length_right=A.PAD_RIGHT)
    t["audio_features"] = time.perf_counter() - s
    t["unet"] = t["vae_decode"] = 0.0
    preds, faces = [], []
    for whisper_batch, latent_batch in ref.datagen(chunks, avatar.input_latent_list_cycle, batch, device=ref.device):
        s = time.perf_counter()
        tokens = ref.pe(whisper_batch.to(ref.device))
        latent_batch = latent_batch.to(device=ref.device, dtype=ref.unet.model.dtype)
        pred = ref.unet.model(latent_batch, ref.timesteps, encoder_hidden_states=tokens).sample
        t["unet"] += time.perf_counter() - s
        s = time.perf_counter()
        recon = ref.vae.decode_latents(pred.to(device=ref.device, dtype=ref.vae.vae.dtype))
        t["vae_decode"] += time.perf_counter() - s
        preds.append(pred)
        faces.extend(recon)
    s = time.perf_counter()
    frames = []
    n = len(avatar.coord_list_cycle)
    for idx, res in enumerate(faces):  # the body of Avatar.process_frames
        x1, y1, x2, y2 = avatar.coord_list_cycle[idx % n]
        ori = ref.copy.deepcopy(avatar.frame_list_cycle[idx % n])
        res = cv2.resize(res.astype(np.uint8), (x2 - x1, y2 - y1))
        frames.append(ref.get_image_blending(ori, res, [x1, y1, x2, y2], avatar.mask_list_cycle[idx % n],
                                             avatar.mask_coords_list_cycle[idx % n]))
    t["blend"] = time.perf_counter() - s

    blended: list[np.ndarray] = []
    real_blend = ref.get_image_blending
    ref.get_image_blending = lambda *a: blended.append(real_blend(*a)) or blended[-1]  # keeps its output
    try:
        s = time.perf_counter()
        avatar.inference(str(wav), None, FPS, True)
        t["end_to_end"] = time.perf_counter() - s
    finally:
        ref.get_image_blending = real_blend
    out = {"audio": chunks.float(), "pred": torch.cat(preds).float(), "faces": np.stack(faces)[..., ::-1],
           "frames": np.stack(frames)[..., ::-1], "e2e_frames": np.stack(blended)[..., ::-1] if blended else None}
    return t, out


def _our_round(models: P.MuseTalkModels, cache: P.AvatarCache, wav: Path, batch: int) -> tuple[dict, dict]:
    """Stage by stage with our engine's functions, then ``speak`` end to end (file read included)."""
    t: dict[str, float] = {}
    s = time.perf_counter()
    data, sr = sf.read(str(wav), dtype="float32", always_2d=True)
    windows = A.AudioWindows(A.to_mono_16k(data.T, sr), models.whisper, FPS)
    feats = windows.windows(0, len(windows))
    t["audio_features"] = time.perf_counter() - s
    t["unet"] = t["vae_decode"] = 0.0
    n = len(windows)
    preds, faces = [], []
    for b in range(0, n, batch):
        ids = [P.pingpong_index(i, len(cache)) for i in range(b, min(b + batch, n))]
        s = time.perf_counter()
        pred = P.predict_latents(models.unet, cache.latents[torch.tensor(ids)], feats[b:b + batch])
        t["unet"] += time.perf_counter() - s
        s = time.perf_counter()
        faces.extend(P.decode_faces(models.vae, pred))
        t["vae_decode"] += time.perf_counter() - s
        preds.append(pred)
    s = time.perf_counter()
    frames = []
    for i, face in enumerate(faces):
        j = P.pingpong_index(i, len(cache))
        x0, y0, x1, y1 = (int(v) for v in cache.boxes[j])
        face = cv2.resize(face, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
        frames.append(B.paste(cache.frames[j], face, (x0, y0, x1, y1), cache.masks[j],
                              tuple(int(v) for v in cache.regions[j])))
    t["blend"] = time.perf_counter() - s

    s = time.perf_counter()
    data, sr = sf.read(str(wav), dtype="float32", always_2d=True)
    e2e = list(P.speak(models, cache, data.T, sr, FPS, batch))
    t["end_to_end"] = time.perf_counter() - s
    out = {"audio": feats.float(), "pred": torch.cat(preds).float(), "faces": np.stack(faces),
           "frames": np.stack(frames), "e2e_frames": np.stack(e2e)}
    return t, out


@torch.inference_mode()
def _warm_up(ref: types.ModuleType, ours: P.MuseTalkModels, latent: torch.Tensor, wav: Path) -> None:
    """One untimed pass of each side's audio encoder, UNet and decoder (one frame), so one-time set-up
    costs fall outside both sides' timings."""
    feats, length = ref.audio_processor.get_audio_feature(str(wav), weight_dtype=ref.weight_dtype)
    ref.audio_processor.get_whisper_chunk(feats, ref.device, ref.weight_dtype, ref.whisper, length, fps=FPS)
    tokens = torch.zeros(1, A.WINDOW * A.N_STATES, A.D_MODEL)
    ref.vae.decode_latents(ref.unet.model(latent, ref.timesteps, encoder_hidden_states=ref.pe(tokens)).sample)
    data, sr = sf.read(str(wav), dtype="float32", always_2d=True)
    windows = A.AudioWindows(A.to_mono_16k(data.T, sr), ours.whisper, FPS)
    windows.windows(0, 1)
    P.decode_faces(ours.vae, P.predict_latents(ours.unet, latent, tokens))


def _max_diff(a: Any, b: Any) -> float:
    if isinstance(a, torch.Tensor):
        return float((a - b).abs().max())
    if a.shape != b.shape:
        raise AssertionError(f"output shapes differ: {a.shape} vs {b.shape}")
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


def _memory() -> dict[str, float]:
    """Resident memory split into anonymous and file-backed (the memory-mapped UNet) parts, in GB."""
    out = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, val = line.partition(":")
            if key in ("VmHWM", "RssAnon", "RssFile"):
                out[key] = round(int(val.split()[0]) / 2**20, 2)
    return out


def compare(ref_dir: Path, frames: np.ndarray, box: tuple[int, int, int, int], audio: Path, n_frames: int,
            batch: int, tiny: bool, rounds: int = 2, weights_dir: Path | None = None,
            log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the comparison and return one JSON-ready row (ms per output frame, ratio = reference / ours)."""
    if n_frames % batch:
        # the reference's datagen moves a partial last batch to "cuda:0", which fails on a CPU-only machine
        raise SystemExit(f"--frames ({n_frames}) must be a multiple of --batch ({batch}) with --reference")
    _reference_script(ref_dir)
    work = Path(tempfile.mkdtemp(prefix="musetalk-vs-ref-"))
    cwd = os.getcwd()
    try:
        files = write_weights(weights_dir or work / "weights", tiny)
        log("weights written")
        ours = load_ours(files)
        cache = P.prepare_avatar(ours, frames, [box] * len(frames), batch_size=batch)
        log(f"avatar prepared ({len(frames)} frames)")
        data, sr = sf.read(str(audio), dtype="float32", always_2d=True)
        wav = work / "speech.wav"
        sf.write(str(wav), data[: int(sr * n_frames / FPS) + 1], sr, subtype="FLOAT")

        ref = load_reference(ref_dir, files, batch)
        write_reference_avatar(work, cache)
        os.chdir(work)  # the reference finds avatars under ./results
        with contextlib.redirect_stdout(sys.stderr):
            avatar = ref.Avatar(avatar_id=AVATAR_ID, video_path="", bbox_shift=0, batch_size=batch, preparation=False)
            _warm_up(ref, ours, torch.cat(avatar.input_latent_list_cycle[:1]), wav)
        log("loaded both sides")

        times: dict[str, list[dict]] = {"reference": [], "ours": []}
        diffs: dict[str, float] = {}
        for r in range(rounds):
            with contextlib.redirect_stdout(sys.stderr), torch.inference_mode():
                t_ref, o_ref = _reference_round(ref, avatar, wav, batch)
                log(f"round {r + 1}: reference {json.dumps({k: round(v, 2) for k, v in t_ref.items()})}")
                t_our, o_our = _our_round(ours, cache, wav, batch)
                log(f"round {r + 1}: ours {json.dumps({k: round(v, 2) for k, v in t_our.items()})}")
            times["reference"].append(t_ref)
            times["ours"].append(t_our)
            if r == 0:
                if len(o_ref["frames"]) != len(o_our["frames"]):
                    raise AssertionError(f"frame counts differ: reference {len(o_ref['frames'])}, ours {len(o_our['frames'])}")
                diffs = {"audio_features": _max_diff(o_ref["audio"], o_our["audio"]),
                         "unet_latents": _max_diff(o_ref["pred"], o_our["pred"]),
                         "decoded_faces": _max_diff(o_ref["faces"], o_our["faces"]),
                         "final_frames": _max_diff(o_ref["frames"], o_our["frames"]),
                         "ours_speak_vs_stages": _max_diff(o_our["e2e_frames"], o_our["frames"])}
                if o_ref["e2e_frames"] is not None:  # its process_frames stops one frame early
                    k = len(o_ref["e2e_frames"])
                    diffs["end_to_end_frames"] = _max_diff(o_ref["e2e_frames"], o_our["e2e_frames"][:k])
                    diffs["reference_e2e_frames_blended"] = k
        n = n_frames
        ms = {side: {k: round(1000 * statistics.median(t[k] for t in runs) / n, 1) for k in STAGES}
              for side, runs in times.items()}
        return {
            "comparison": "musetalk-realtime vs reference", "reference": str(ref_dir),
            "device": f"cpu x{torch.get_num_threads()} threads", "size": "tiny" if tiny else "full", "dtype": "fp32",
            "batch": batch, "frames": n, "avatar_frames": len(frames), "frame_size": list(frames.shape[1:3]),
            "rounds": rounds, "loadavg": [round(v, 2) for v in os.getloadavg()],
            "ms_per_frame": ms,
            "ratio_reference_over_ours": {k: round(ms["reference"][k] / max(ms["ours"][k], 1e-9), 2) for k in STAGES},
            "max_abs_diff": {k: round(v, 6) for k, v in diffs.items()},
            "memory_gb": _memory(),
        }
    finally:
        os.chdir(cwd)
        shutil.rmtree(work, ignore_errors=True)
