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
  writing by the same arrays), final composited frames compared.

``--write-fixture`` stores small slices of the reference's outputs for ``tests/unit/test_latentsync_parity.py``.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.machinery
import math
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

TESTDATA = Path(__file__).resolve().parents[2] / "shared" / "testdata"
CHECKS = ("unet", "deepcache", "audio", "align", "e2e")


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


def _pe_for(name: str, model_on_meta) -> torch.Tensor:
    """The sinusoid table a PositionalEncoding of that buffer's width holds."""
    from comfyui_digitalhuman.engine.latentsync.blocks import PositionalEncoding

    shape = model_on_meta.get_buffer(name).shape
    return PositionalEncoding(shape[2], shape[1]).pe


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reference", type=Path, required=True, help="a checkout of bytedance/LatentSync")
    ap.add_argument("--checks", default=",".join(CHECKS), help=f"comma-separated subset of {','.join(CHECKS)}")
    ap.add_argument("--full-unet", action="store_true", help="also compare the published-size UNet (about 5 GB of RAM)")
    ap.add_argument("--mask", type=Path, help="the reference's latentsync/utils/mask.png (default: the checkout's)")
    ap.add_argument("--write-fixture", type=Path, help="write the reference's outputs for the unit tests here (.npz)")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    import_reference(args.reference)
    checks = [c.strip() for c in args.checks.split(",") if c.strip()]
    unknown = sorted(set(checks) - set(CHECKS))
    if unknown:
        raise SystemExit(f"unknown checks {unknown}; choose from {CHECKS}")
    out: dict[str, np.ndarray] = {}
    if "unet" in checks:
        check_unet(args.full_unet, out)
    if "deepcache" in checks:
        check_deepcache(args.reference, out)
    if args.write_fixture:
        args.write_fixture.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(args.write_fixture, **out)
        print(f"wrote {args.write_fixture} ({args.write_fixture.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
