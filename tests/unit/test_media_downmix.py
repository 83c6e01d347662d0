"""Save Video's channel fitting (engine.media.downmix, engine.media.video_write) for 1-16 channels.

The rule (data/media.json): up to 2 channels are kept; 3-8 are taken as the surround layout
named there and downmixed to stereo with the ITU-R BS.775 coefficients; more are averaged to
mono. Everything with 8 or more channels runs in a child process (tests/audio_cases.py), so a
regression to PyAV's planar conversion fails here instead of killing pytest.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import av
import numpy as np
import pytest

from audio_cases import frequencies, middle, tone_level
from isolated import TESTS, exit_reason, last_line, run_python
from comfyui_digitalhuman.engine.media.settings import media_settings

S = 1 / math.sqrt(2)  # -3 dB
# ITU-R BS.775 stereo downmix: fronts to their side, centre and surrounds at -3 dB, a single back
# centre split into both sides at -3 dB each of the -3 dB surround (0.5), LFE not mixed in.
ITU = {"FL": (1, 0), "FR": (0, 1), "FC": (S, S), "LFE": (0, 0), "BL": (S, 0), "BR": (0, S),
       "SL": (S, 0), "SR": (0, S), "BC": (0.5, 0.5)}


def child(tmp_path_factory, what: str) -> tuple[Path, object]:
    folder = tmp_path_factory.mktemp(what)
    return folder, run_python([TESTS / "audio_cases.py", what, folder], timeout=600)


def result(run, name: str) -> tuple[np.ndarray, dict]:
    folder, proc = run
    if not (folder / f"{name}.npy").exists():
        pytest.fail(f"the child process {exit_reason(proc)} during '{last_line(proc, 'case ')}':\n{proc.stderr[-3000:]}")
    return np.load(folder / f"{name}.npy"), json.loads((folder / f"{name}.json").read_text())


@pytest.fixture(scope="module")
def impulses(tmp_path_factory):
    return child(tmp_path_factory, "downmix")


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    return child(tmp_path_factory, "write")


@pytest.mark.parametrize("n", range(1, 17))
def test_downmix_matrix(impulses, n: int) -> None:
    got, meta = result(impulses, f"impulses{n}")  # [C_out, C_in]: the response to 0.5 on each input channel
    assert meta["len"] == 64 * n and meta["gain_db"] == 0.0  # length kept; 0.5 impulses need no scaling
    layouts = media_settings()["mp4_downmix_layouts"]
    if n <= 2:
        assert meta["rule"] == "" and np.array_equal(got, 0.5 * np.eye(n))
    elif str(n) in layouts:
        names = [c.name for c in av.AudioLayout(layouts[str(n)]).channels]
        want = 0.5 * np.array([ITU[name] for name in names], dtype=np.float64).T
        assert "stereo" in meta["rule"] and layouts[str(n)] in meta["rule"]
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)  # float32 matrix coefficients
    else:
        assert "averaged to mono" in meta["rule"]
        np.testing.assert_allclose(got, np.full((1, n), 0.5 / n), rtol=0, atol=1e-7)


def test_loud_downmix_is_scaled_not_clipped(impulses) -> None:
    got, meta = result(impulses, "loud")
    peak = 0.9 * (1 + 3 * S)  # 7.1 left side: FL + FC + BL + SL, every channel at 0.9
    assert meta["gain_db"] == pytest.approx(-20 * math.log10(peak), abs=1e-4)
    np.testing.assert_allclose(got, 1.0, rtol=0, atol=1e-6)


@pytest.mark.parametrize("n", [2, 8, 16])
def test_save_video_fits_channels(written, n: int) -> None:
    wave, meta = result(written, f"w{n}")
    assert meta["codec"] == "aac" and meta["channels_in"] == n
    seg = middle(wave, 48000)
    hz = frequencies(n)
    if n == 2:
        assert meta["channels"] == meta["channels_out"] == 2 and meta["rule"] == ""
        assert tone_level(seg[0], 48000, hz[0]) > 0.15 and tone_level(seg[0], 48000, hz[1]) < 0.01
    elif n == 8:  # 7.1: FL FR FC LFE BL BR SL SR, every tone at 0.2
        assert meta["channels"] == meta["channels_out"] == 2 and "7.1" in meta["rule"]
        for ch, (left, right) in enumerate(ITU[name] for name in ("FL", "FR", "FC", "LFE", "BL", "BR", "SL", "SR")):
            # AAC (lossy, default bit rate) keeps these tones within ~2 % here; 0.01 is 5 % of a full tone
            assert tone_level(seg[0], 48000, hz[ch]) == pytest.approx(0.2 * left, abs=0.01), f"L, channel {ch}"
            assert tone_level(seg[1], 48000, hz[ch]) == pytest.approx(0.2 * right, abs=0.01), f"R, channel {ch}"
    else:  # 16: no speaker layout, averaged to mono
        assert meta["channels"] == meta["channels_out"] == 1 and "mono" in meta["rule"]
        for ch in range(n):
            # 16 quiet tones share the AAC bits: within ~7 % here, 0.0015 allows 12 %
            assert tone_level(seg[0], 48000, hz[ch]) == pytest.approx(0.2 / n, abs=0.0015), f"channel {ch}"
