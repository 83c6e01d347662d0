"""The piece loop both streaming speech clients (OpenAI, ElevenLabs) run: a Cancel check before each
piece, read from the client each time, and the silence of the pause table before every piece but
the first, with pauses on."""
from __future__ import annotations

import pytest

from comfyui_digitalhuman.engine.speech.config import section
from comfyui_digitalhuman.engine.speech.sentences import plan_pieces
from comfyui_digitalhuman.providers.http import HttpClient
from comfyui_digitalhuman.providers.speech_base import SpeechStream

SR = 24000


class Stop(Exception):
    pass


def test_pauses_follow_the_table_and_only_between_pieces():
    plan = plan_pieces("One sentence. Two sentences!\n\nA new paragraph.", mode="sentence")
    kinds = [p.break_before for p in plan.pieces]
    assert kinds == ["start", "sentence", "paragraph"]
    table = section("pauses")
    got = list(SpeechStream(plan, SR).paced(HttpClient("http://127.0.0.1:9"), pauses=True))
    assert [i for i, _, _ in got] == [0, 1, 2] and [p for _, p, _ in got] == plan.pieces
    assert got[0][2] is None
    for i, _, gap in got[1:]:
        assert gap.kind == "pause" and gap.piece == i and gap.sample_rate == SR
        assert len(gap.samples) == int(round(table[kinds[i]] * SR)) > 0 and not gap.samples.any()
    assert all(gap is None for _, _, gap in SpeechStream(plan, SR).paced(HttpClient("http://127.0.0.1:9"), False))


def test_cancel_is_read_from_the_client_before_each_piece():
    plan = plan_pieces("First. Second. Third.", mode="sentence")
    client = HttpClient("http://127.0.0.1:9")
    pieces = SpeechStream(plan, SR).paced(client, pauses=False)
    assert next(pieces)[0] == 0

    def stop():
        raise Stop("cancelled")

    client.check_interrupt = stop  # set after the loop started (a live session binds it late)
    with pytest.raises(Stop):
        next(pieces)
