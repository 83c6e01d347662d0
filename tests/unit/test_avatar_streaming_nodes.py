"""The streaming-avatar nodes (nodes/avatar_streaming.py) on the real ComfyUI modules, against the fake
LiveAvatar, HeyGen and D-ID: a session started, fed a script and an AUDIO at the wrong rate,
restarted under the same link, stopped with its cost; and the mistakes a user can make, each a
clear message."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fakedid import FakeDID
from fakeheygen import FakeHeyGen
from fakeliveavatar import FakeLiveAvatar


@pytest.fixture()
def env(comfy_env, monkeypatch):
    from comfyui_digitalhuman.engine.live import registry as reg_mod
    from comfyui_digitalhuman.nodes import avatar_streaming as nodes

    reg = reg_mod.Registry()
    monkeypatch.setattr(reg_mod, "_REGISTRY", reg)
    with FakeLiveAvatar() as la, FakeHeyGen() as hg, FakeDID() as did:
        for var, val in (("LIVEAVATAR_API_KEY", la.api_key), ("LIVEAVATAR_BASE_URL", la.url), ("HEYGEN_API_KEY", hg.api_key),
                         ("HEYGEN_BASE_URL", hg.url), ("DID_API_KEY", did.api_key), ("DID_BASE_URL", did.url)):
            monkeypatch.setenv(var, val)
        yield nodes, reg, la, hg, did, comfy_env
        reg.close_all()


def start(nodes, provider="LiveAvatar LITE", **kw):
    args = dict(provider=provider, avatar="", voice="", quality="high", language="en", max_minutes=5.0, sandbox=True,
                session_name="node test")
    args.update(kw)
    return nodes.DH_AvatarSessionStart().start(**args)


def test_node_definitions():
    from comfyui_digitalhuman.nodes import avatar_streaming as nodes
    from comfyui_digitalhuman.nodes.common import CAT_REALTIME

    for node_id, cls in nodes.NODE_CLASS_MAPPINGS.items():
        assert node_id.startswith("DH_") and cls.CATEGORY == CAT_REALTIME and cls.DESCRIPTION
        for group in cls.INPUT_TYPES().values():
            for name, (typ, opts) in group.items():
                assert opts.get("tooltip"), f"{node_id}.{name} has no tooltip"
                assert "key" not in name.lower(), f"{node_id}.{name}: no key is ever a node input"
        assert callable(getattr(cls, cls.FUNCTION))
    assert "legacy" in nodes.DH_AvatarSessionStart.DESCRIPTION  # HeyGen's streaming API is marked legacy


def test_lite_session_speaks_an_audio_at_the_wrong_rate_and_stops_with_its_cost(env):
    nodes, reg, la, hg, did, comfy = env
    out = start(nodes)
    session, cost = out["result"]
    info = out["ui"]["dh_live"][0]
    assert info["link"] == f"/digitalhuman/live/page#s={session.id}" and reg.get(session.id) is session
    assert cost == 0.0 and "LiveAvatar LITE (sandbox)" in out["ui"]["text"][0] and la.api_key not in repr(out)
    rate = 16000
    wave = torch.from_numpy((0.3 * np.sin(2 * np.pi * 200 * np.arange(2 * rate) / rate)).astype(np.float32))
    audio = {"waveform": wave.reshape(1, 1, -1).repeat(1, 2, 1), "sample_rate": rate}  # stereo at 16 kHz
    session2, cost2 = nodes.DH_AvatarSessionSpeak().speak(session, "", "repeat", True, audio=audio)["result"]
    assert session2 is session
    fs = la.one()
    eid = next(iter(fs.utterances))
    assert len(la.audio(fs.id, eid)) == pytest.approx(2 * 24000, abs=2)  # resampled to 24 kHz, never sent as is
    total, report = nodes.DH_AvatarSessionStop().stop(session)["result"]
    assert total == 0.0 and "stopped by the Stop node" in report and fs.stop_reason == "USER_CLOSED"
    with pytest.raises(Exception, match=r"has ended \(stopped by the Stop node\) after .* min, cost \$0\.000"):
        nodes.DH_AvatarSessionSpeak().speak(session, "", "repeat", True, audio=audio)
    with pytest.raises(Exception, match="no live session with this id"):
        reg.get(session.id)


def test_a_long_script_goes_sentence_by_sentence_to_heygen(env):
    nodes, reg, la, hg, did, comfy = env
    session, _ = start(nodes, "HeyGen (legacy)", sandbox=False, avatar="Wayne_20240711", quality="very_high")["result"]
    assert hg.one().body["quality"] == "high"  # very_high is LiveAvatar's; HeyGen gets its best
    script = " ".join(f"Sentence number {i} of a long script that keeps going." for i in range(60))  # 3300 characters
    nodes.DH_AvatarSessionSpeak().speak(session, script, "repeat", False)
    tasks = hg.one().tasks
    assert len(tasks) == 2 and all(len(t["text"]) <= 2000 for t in tasks)
    assert " ".join(t["text"] for t in tasks) == script  # nothing lost at the cut
    cost, report = nodes.DH_AvatarSessionStop().stop(session)["result"]
    # 1 credit per 10 minutes at $0.50 (Scale); the table rounds to a millionth of a dollar
    assert cost == pytest.approx(session.elapsed_s / 60 / 10 * 0.5, abs=5e-7) and "HeyGen (legacy)" in report


def test_queueing_again_restarts_under_the_same_link(env):
    nodes, reg, la, hg, did, comfy = env
    first, _ = start(nodes, "LiveAvatar FULL")["result"]
    second, _ = start(nodes, "LiveAvatar FULL")["result"]
    assert second is not first and second.id == first.id and first.state == "closed"
    assert reg.get(second.id) is second
    assert [s.stop_reason for s in la.sessions.values()].count("USER_CLOSED") == 1


def test_the_mistakes_a_user_can_make(env):
    nodes, reg, la, hg, did, comfy = env
    with pytest.raises(ValueError, match="D-ID needs a portrait"):
        start(nodes, "D-ID", sandbox=False)
    with pytest.raises(ValueError, match="sandbox is LiveAvatar's free mode"):
        start(nodes, "HeyGen (legacy)", sandbox=True)
    with pytest.raises(ValueError, match="speech_voice and chat drive LiveAvatar LITE only"):
        start(nodes, "LiveAvatar FULL", speech_voice=object())
    with pytest.raises(ValueError, match="session_name"):
        start(nodes, session_name="bad/name")
    with pytest.raises(Exception, match=r"404.*no such avatar"):
        start(nodes, "LiveAvatar FULL", sandbox=False, avatar="not-an-avatar")
    la.credits = 0
    with pytest.raises(Exception, match=r"402.*no credits left"):
        start(nodes, "LiveAvatar FULL", sandbox=False, avatar="6e0a1b2c-0000-4000-8000-00000000a001")
    session, _ = start(nodes)["result"]
    with pytest.raises(ValueError, match="nothing to say"):
        nodes.DH_AvatarSessionSpeak().speak(session, "  ", "repeat", True)
    with pytest.raises(ValueError, match="connect a voice to the session node"):
        nodes.DH_AvatarSessionSpeak().speak(session, "Hello", "repeat", True)
    with pytest.raises(ValueError, match="connect the output of Streaming Avatar Session"):
        nodes.DH_AvatarSessionSpeak().speak("a string", "Hello", "repeat", True)
    assert reg.list() == [session]  # nothing half-started was left registered


def test_a_did_session_from_an_image(env):
    nodes, reg, la, hg, did, comfy = env
    portrait = torch.rand(1, 96, 80, 3)
    session, _ = start(nodes, "D-ID", sandbox=False, portrait=portrait, voice="de-DE-KatjaNeural")["result"]
    st = did.one()
    png = did.images[st.source_url]
    from PIL import Image
    import io

    img = Image.open(io.BytesIO(png))
    assert img.size == (80, 96)
    assert np.abs(np.asarray(img, np.float32) / 255 - portrait[0].numpy()).max() <= 0.5 / 255 + 1e-6  # the same picture
    assert session.backend.voice == {"type": "microsoft", "voice_id": "de-DE-KatjaNeural"}
    nodes.DH_AvatarSessionStop().stop(session)
    assert st.deleted


def test_the_catalogue_node_lists_avatars_and_voices(env):
    nodes, reg, la, hg, did, comfy = env
    (text,) = nodes.DH_LiveAvatarCatalog().list(True)["result"]
    assert "6e0a1b2c-0000-4000-8000-00000000a001  Ana" in text and "v-li  Li  zh" in text
