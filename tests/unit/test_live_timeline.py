"""The live timeline (engine/live/timeline.py) and registry (engine/live/registry.py) without networks:
the audio schedule over a 30-minute session, speech frames keeping their own samples at a
fractional frame rate, placement ahead of the idle loop, holds, interrupt, and the registry's
bounds, ids and idle reaper."""
from __future__ import annotations

import numpy as np
import pytest

from comfyui_digitalhuman.engine.live.registry import Registry, TooManySessionsError, UnknownSessionError
from comfyui_digitalhuman.engine.live.timeline import Picture, SpeechFrame, Timeline, end_piece


def frames(n=4, h=24, w=32):
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (n, h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("fps", [25.0, 29.97, 24.0])
def test_thirty_minutes_of_ticks_never_drift(fps):
    tl = Timeline(Picture(frames(), 0), fps, 48000, transition_frames=0)
    n = int(30 * 60 * fps)
    total = 0
    lengths = set()
    for i in range(n):
        k = tl.samples_of(i)
        lengths.add(k)
        total += k
    # the sound of frame i is samples a(i)..a(i+1)-1 with a(i) = round(i * 48000 / fps): after 30 min the
    # total is exactly the duration's samples, and no frame is off by more than one sample
    assert total == round(n * 48000 / fps)
    assert max(lengths) - min(lengths) <= 1
    f = tl.tick()
    assert f.audio.shape == (tl.samples_of(0),)


def test_speech_frames_keep_their_own_samples_at_a_fractional_rate():
    fps = 29.97
    tl = Timeline(Picture(frames(1), 0), fps, 48000, transition_frames=0, max_buffer=100)
    gen = tl.gen
    audio = np.arange(48000 * 2, dtype=np.float32) / 1e6  # 2 s of distinct samples
    n = int(2 * fps)
    start = tl.place(gen, 0.0)
    assert start == 0  # a one-frame avatar (a still portrait) starts at once
    piece = []
    for k in range(n):
        a, b = tl.piece_samples(k)
        piece.append(SpeechFrame(gen, start + k, frames(1)[0], audio[a:b], turn=1, piece=0, first=(k == 0)))
    assert tl.push(piece + [end_piece(gen, 1, 0)])
    out = [tl.tick() for _ in range(n)]
    assert all(f.speaking for f in out)
    got = np.concatenate([f.audio for f in out])
    # the output schedule differs from the piece's by at most one sample per frame, carried over, so
    # frame k plays the piece's samples from within one sample of k/fps and nothing is lost or doubled
    want = audio[:tl.piece_samples(n - 1)[1]]
    m = min(got.size, want.size)
    np.testing.assert_array_equal(got[:m], want[:m])
    assert abs(got.size - want.size) <= 1
    assert not tl.tick().speaking and tl.stats["skips"] == 0


def test_a_piece_is_placed_ahead_of_the_idle_loop_and_the_loop_never_jumps():
    tl = Timeline(Picture(frames(4), 0), 25.0, 48000, transition_frames=0, start_margin=1.0)
    for _ in range(5):
        tl.tick()
    gen = tl.gen
    start = tl.place(gen, 0.2)  # expected render 0.2 s = 5 frames
    assert start == tl.pos + 1 + 5
    seen = [tl.tick() for _ in range(8)]  # the render is late: the loop idles up to start-1, then holds
    assert [f.pos for f in seen[:5]] == list(range(5, 10))
    assert all(f.held for f in seen[5:]) and tl.stats["start_holds"] == 3
    tl.push([SpeechFrame(gen, start + k, frames(1)[0], np.zeros(1920, np.float32), turn=1, first=(k == 0)) for k in range(3)])
    f = tl.tick()
    assert f.speaking and f.pos == start and tl.stats["skips"] == 0
    assert ("first_frame", 1) in f.events
    # mid-piece the renderer falls behind: the picture holds (a stall), it does not idle ahead
    tl.tick(), tl.tick()
    stall = tl.tick()
    assert stall.held and stall.speaking and tl.stats["stalls"] == 1


def test_interrupt_discards_the_queue_and_the_next_frame_is_idle():
    tl = Timeline(Picture(frames(2), 0), 25.0, 48000, transition_frames=3)
    gen = tl.gen
    start = tl.place(gen, 0.0)
    spk = np.full((24, 32, 3), 250, np.uint8)
    tl.push([SpeechFrame(gen, start + k, spk, np.ones(1920, np.float32), turn=7, first=(k == 0)) for k in range(10)])
    while not tl.tick().speaking:
        pass
    for _ in range(4):
        tl.tick()
    new = tl.interrupt()
    assert new == gen + 1 and tl.stats["discarded"] == 5
    f = tl.tick()
    assert not f.speaking and not f.audio.any() and ("turn_end", 7, True) in f.events
    # the last mouth fades out over the transition frames instead of vanishing at once
    diffs = [np.abs(f.video.astype(int) - tl.picture.at(f.pos).astype(int)).max()]
    for _ in range(4):
        g = tl.tick()
        diffs.append(np.abs(g.video.astype(int) - tl.picture.at(g.pos).astype(int)).max())
    assert diffs[0] > diffs[1] > diffs[2] > 0 and diffs[-1] == 0
    # late frames of the old answer are refused
    assert not tl.push([SpeechFrame(gen, 99, spk, np.zeros(1920, np.float32), turn=7)])


def test_picture_scales_and_pads_to_even_sizes():
    p = Picture(np.zeros((1, 721, 1281, 3), np.uint8), 720)
    assert p.size == (720, 406) and p.at(0).shape == (406, 720, 3)
    q = Picture(np.zeros((1, 101, 99, 3), np.uint8), 0)
    assert q.size == (100, 102) and q.at(5).shape == (102, 100, 3)


class _S:
    def __init__(self):
        self.state, self.closed, self.last_activity = "idle", 0, 0.0

    def close(self):
        self.closed += 1
        self.state = "closed"


def test_registry_ids_bounds_updates_and_idle_reaper():
    reg = Registry({"max_sessions": 2, "idle_timeout_s": 60})
    a, created = reg.start("desk", _S, ("avatar1",), update=lambda s: setattr(s, "updated", True))
    assert created and len(a.id) >= 32 and reg.get(a.id) is a
    same, created = reg.start("desk", _S, ("avatar1",), update=lambda s: setattr(s, "updated", True))
    assert same is a and not created and a.updated  # updated in place
    b, created = reg.start("desk", _S, ("avatar2",), update=None)
    assert created and b is not a and b.id == a.id and a.closed == 1  # restarted under the same id
    reg.start("kiosk", _S)
    with pytest.raises(TooManySessionsError, match="the most this server allows"):
        reg.start("third", _S)
    with pytest.raises(UnknownSessionError):
        reg.get("nope")
    ids = {s.id for s in reg.list()}
    assert len(ids) == 2
    for s in reg.list():
        s.last_activity = 0.0
    reg.set_viewers(b.id, 1)
    gone = reg.reap(now=120.0)  # idle for 120 s > 60 s; the watched one stays
    assert b.id not in gone and len(gone) == 1 and len(reg.list()) == 1
    reg.close_all()
    assert reg.list() == [] and b.closed == 1


def test_a_closed_session_stays_readable_for_a_while_without_taking_a_place():
    """The panel reads a closed session's last events (its reason, its final cost): the reaper keeps it
    ``closed_kept_s`` after it first sees it closed, and it no longer counts against max_sessions."""
    reg = Registry({"max_sessions": 1, "idle_timeout_s": 60, "closed_kept_s": 30})
    ended: list[str] = []
    reg.on_close.append(ended.append)  # the routes end the session's viewers here
    a, _ = reg.start("desk", _S)
    a.close()
    other, created = reg.start("kiosk", _S)  # the closed one takes no place
    assert created and reg.get(a.id) is a
    other.last_activity = 100.0  # in use: not idle
    assert reg.reap(now=100.0) == [] and reg.get(a.id) is a  # first seen closed at 100 s
    assert ended == [a.id]  # its viewers end at once
    assert reg.reap(now=129.0) == [] and reg.get(a.id) is a and ended == [a.id]
    assert reg.reap(now=130.0) == [a.id]
    with pytest.raises(UnknownSessionError):
        reg.get(a.id)
    assert reg.get(other.id) is other
