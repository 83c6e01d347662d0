"""Our speech-token -> waveform path against the reference's ``CosyVoice2Model.tts`` on the same
small networks, tokens, prompt and seed (fixture written by ``scripts/cosyvoice_reference.py
--write-fixture``): non-streamed, non-streamed with a speed change, and streamed in hops.

Tolerance: the flow and HiFT each match the reference to fp32 rounding (their own parity tests);
what can grow from there is the vocoder's phase, the running sum of F0 over each hop. An F0 off by
one float32 ulp (3e-5 Hz at the few hundred Hz of these networks; the F0 predictor rounds
differently on short hops, e.g. the 10-frame first hop here) shifts the phase of harmonic k by at
most 2*pi*k*3e-5*t, i.e. under 2e-3 rad for the 9 harmonics over the 1.2 s of a chunk, which moves a
sample of amplitude <= 0.99 by under 2e-3. Any mistake in the schedule (hop lengths, the cached
mel or source, the Hamming cross-fade, the cut of the cached tail) changes samples by the size of
the signal (0.05-0.5 here), and the chunk lengths must match exactly.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from comfyui_digitalhuman.engine.cosyvoice import flow as FL
from comfyui_digitalhuman.engine.cosyvoice import hift as HF
from comfyui_digitalhuman.engine.cosyvoice.random_flow import random_flow_state_dict
from comfyui_digitalhuman.engine.cosyvoice.random_hift import random_hift_state_dict
from tiny_cosyvoice import small_config

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "cosyvoice" / "token2wav_reference.npz"
PHASE = 2e-3  # relative to the signal's peak, see above
CASES = {"offline": (False, 1.0), "offline_speed": (False, 1.25), "stream": (True, 1.0)}


@pytest.fixture(scope="module")
def ref():
    return dict(np.load(FIXTURE))


@pytest.fixture(scope="module")
def nets(ref):
    cfg = small_config()
    seed = int(ref["seed"])
    flow = FL.load_flow_weights(FL.build_flow(cfg["flow"]), random_flow_state_dict(cfg["flow"], seed), "flow")
    hift = HF.build_hift(cfg["hift"], random_hift_state_dict(cfg["hift"], seed), source="hift")
    return cfg, flow, hift


def _ours(ref, nets, stream: bool, speed: float) -> list[np.ndarray]:
    import torch

    from comfyui_digitalhuman.engine.cosyvoice.token2wav import FlowPrompt, StreamSchedule, Token2Wav, tokens_to_speech

    cfg, flow, hift = nets
    prompt = FlowPrompt(torch.from_numpy(ref["prompt_tokens"]), torch.from_numpy(ref["prompt_feat"]),
                        torch.from_numpy(ref["embedding"]))
    gen = torch.Generator()
    gen.manual_seed(int(ref["seed"]))
    conv = Token2Wav(flow, hift, prompt, StreamSchedule.from_config(cfg), generator=gen)
    tokens = iter(int(t) for t in ref["tokens"][0])
    return [c[0].numpy() for c in tokens_to_speech(tokens, conv, stream=stream, speed=speed)]


@pytest.mark.parametrize("case", list(CASES))
def test_matches_the_reference_tts(ref, nets, case):
    stream, speed = CASES[case]
    theirs = [ref[f"{case}.{i}"] for i in range(int(ref[f"{case}.chunks"]))]
    mine = _ours(ref, nets, stream, speed)
    assert [len(c) for c in mine] == [len(c) for c in theirs]
    peak = max(float(np.abs(c).max()) for c in theirs if len(c))
    assert peak > 0.01  # a real signal, not silence
    for i, (a, b) in enumerate(zip(mine, theirs)):
        if len(b):
            np.testing.assert_allclose(a, b, rtol=0, atol=PHASE * peak, err_msg=f"{case} chunk {i}")


def test_stream_has_growing_hops_and_a_remainder(ref):
    """The fixture's own shape: prompt of 7 tokens with hop 4 -> first hop 4 + 1 pad = 5 tokens,
    then 8, then the rest (17 < 16 + 3 look-ahead) in the final call; each non-final hop loses the
    3840 cached samples at its end, which the next one cross-fades back in."""
    lengths = [len(ref[f"stream.{i}"]) for i in range(int(ref["stream.chunks"]))]
    assert ref["prompt_tokens"].shape[1] == 7 and ref["tokens"].shape[1] == 30
    assert lengths == [5 * 960 - 3840, 8 * 960, 17 * 960 + 3840]
    assert sum(lengths) == len(ref["offline.0"])
