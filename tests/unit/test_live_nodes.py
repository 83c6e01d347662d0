"""The real-time nodes (nodes/live.py) on the real ComfyUI modules: a Live Session started from a
prepared avatar (tiny MuseTalk weights from the fake hub), updated in place, restarted under the
same link, recorded into the output folder; the voice and chat nodes; the errors a user can make."""
from __future__ import annotations

import pytest
import torch

from fakechat import FakeChat
from fakeopenai import FakeOpenAI, fake_key
from test_musetalk_nodes import images, musetalk_env  # noqa: F401  (shared fixtures)


@pytest.fixture()
def live_env(musetalk_env, monkeypatch):
    lipsync, hub, env = musetalk_env
    from comfyui_digitalhuman.engine.live import registry as reg_mod
    from comfyui_digitalhuman.nodes import live

    reg = reg_mod.Registry()
    monkeypatch.setattr(reg_mod, "_REGISTRY", reg)
    yield live, lipsync, env, reg
    reg.close_all()


def test_node_definitions():
    from comfyui_digitalhuman.nodes import live
    from comfyui_digitalhuman.nodes.common import CAT_REALTIME

    for node_id, cls in live.NODE_CLASS_MAPPINGS.items():
        assert node_id.startswith("DH_") and cls.CATEGORY == CAT_REALTIME and cls.DESCRIPTION
        for group in cls.INPUT_TYPES().values():
            for name, (typ, opts) in group.items():
                assert opts.get("tooltip"), f"{node_id}.{name} has no tooltip"
        assert callable(getattr(cls, cls.FUNCTION))
    spec = live.DH_ChatModel.INPUT_TYPES()["required"]
    assert "api_key" not in spec and "key_name" in spec  # never a key as an input


def test_live_session_node_starts_updates_and_restarts(live_env, images, monkeypatch):
    live, lipsync, env, reg = live_env
    (handle,) = lipsync.DH_LoadMuseTalk().load("fp32")
    avatar, _ = lipsync.DH_MuseTalkPrepareAvatar().prepare(handle, 0, "jaw", "", images=images)
    key = fake_key("nodes")
    with FakeOpenAI(api_key=key) as fake:
        monkeypatch.setenv("OPENAI_API_KEY", key)
        (voice,) = live.DH_OpenAILiveVoice().make("tts-1", "alloy", 1.0, "", base_url=fake.url)
        node = live.DH_LiveSession()
        out = node.start(handle, avatar, "desk", 25.0, 8, 720, False, voice=voice)
        (link,) = out["result"]
        sid = out["ui"]["dh_live"][0]["id"]
        assert link == f"/digitalhuman/live/page#s={sid}" and out["ui"]["dh_live"][0]["created"]
        assert "started" in out["ui"]["text"][0] and link in out["ui"]["text"][0] and key not in repr(out)
        s = reg.get(sid)
        assert s.modes == ["repeat", "audio"] and s.size == (176, 304)
        with FakeChat() as chat_srv:
            (chat,) = live.DH_ChatModel().make(chat_srv.url, "llama3.2", "OPENAI_API_KEY", "Be brief.", "", 0.5, 100)
            again = node.start(handle, avatar, "desk", 25.0, 8, 720, False, voice=voice, chat=chat)
            assert again["ui"]["dh_live"][0] == {"id": sid, "name": "desk", "link": link, "created": False}
            assert reg.get(sid) is s and s.modes == ["repeat", "chat", "audio"]  # updated in place
            restarted = node.start(handle, avatar, "desk", 20.0, 8, 720, True, voice=voice)
            assert restarted["ui"]["dh_live"][0]["id"] == sid and restarted["ui"]["dh_live"][0]["created"]
            s2 = reg.get(sid)
            assert s2 is not s and s.state == "closed" and s2.options.fps == 20.0  # same link, new session
            assert "Recording to" in restarted["ui"]["text"][1]
            assert str(s2.recorder.partial).startswith(str(env.dirs["output"]))


def test_live_session_node_errors(live_env, images):
    live, lipsync, env, reg = live_env
    (handle,) = lipsync.DH_LoadMuseTalk().load("fp32")
    avatar, _ = lipsync.DH_MuseTalkPrepareAvatar().prepare(handle, 0, "jaw", "", images=images)
    node = live.DH_LiveSession()
    with pytest.raises(ValueError, match="connect a prepared MuseTalk avatar"):
        node.start(handle, None, "x", 25.0, 8, 720, False)
    with pytest.raises(ValueError, match="needs a voice"):
        node.start(handle, avatar, "x", 25.0, 8, 720, False, chat=object())
    with pytest.raises(ValueError, match="session_name"):
        node.start(handle, avatar, "../x", 25.0, 8, 720, False)
    import dataclasses

    other = dataclasses.replace(avatar, latents=torch.zeros(len(avatar), 4, 32, 32))
    with pytest.raises(ValueError, match="prepared for another model"):
        node.start(handle, other, "x", 25.0, 8, 720, False)
    assert reg.list() == []  # nothing half-made is left
    reg.limits = {**reg.limits, "max_sessions": 1}
    node.start(handle, avatar, "one", 25.0, 8, 720, False)
    with pytest.raises(RuntimeError, match="the most this server allows"):
        node.start(handle, avatar, "two", 25.0, 8, 720, False)
    with pytest.raises(ValueError, match="NAME of an environment variable"):
        live.DH_ChatModel().make("http://127.0.0.1:9/v1", "m", "sk-" + "x" * 20, "", "", 0.5, 10)
