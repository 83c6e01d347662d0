"""Step 4, real time: a live digital human in the browser (DigitalHuman/4 Real time).

- **Live Session**: a prepared MuseTalk avatar + a live voice (+ a chat model) -> a session the
  live panel (sidebar tab, or floating panel in older frontends) and the standalone page show.
  Queueing it starts the session, or updates it in place (voice, chat model) when the avatar and
  settings are the same, so its link stays valid; it shows the link in the node.
- **CosyVoice Live Voice**, **OpenAI Live Voice**, **ElevenLabs Live Voice**: a cloned CosyVoice 2
  voice (local) and the API voices as streaming voices (audio arrives while it is made).
- **Chat Model (OpenAI-compatible)**: OpenAI, or a local Ollama / vLLM / llama.cpp server, with a
  system prompt and a knowledge text.

No key is a node input: keys come from the environment or ``<user dir>/digitalhuman/keys.json``;
the chat node takes only the *name* of its key. The browser never receives a key.
"""
from __future__ import annotations

import logging
import time

from .common import CAT_REALTIME

log = logging.getLogger("DigitalHuman")

VOICE_TYPE = "DH_STREAMING_VOICE"
CHAT_TYPE = "DH_CHAT_MODEL"
PAGE = "/digitalhuman/live/page"


def _record_base(prefix: str, name: str):
    import os

    import folder_paths

    out = folder_paths.get_output_directory()
    full_dir, stem, counter, _, _ = folder_paths.get_save_image_path(prefix or "DigitalHuman/live", out)
    os.makedirs(full_dir, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return os.path.join(full_dir, f"{stem}_{name}_{stamp}_{counter:05}")


class DH_LiveSession:
    DESCRIPTION = ("Starts (or updates) a live digital human: the avatar idles on its own frames, speaks what is typed "
                   "(repeat), answers through a chat model (chat), or lip-syncs a clip (audio), streamed to the browser "
                   "over WebRTC with sound. Open it in the Live panel of ComfyUI or at the link shown here. Queue again "
                   "with a new voice or chat model to update the session in place; a new avatar or setting restarts it "
                   "under the same link.")
    CATEGORY = CAT_REALTIME
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("link",)
    OUTPUT_TOOLTIPS = ("The standalone page of the session (a path on this ComfyUI server; embed or share it on your network).",)
    OUTPUT_NODE = True
    FUNCTION = "start"

    @classmethod
    def INPUT_TYPES(cls):
        from ..engine.live.config import section

        media = section("media")
        return {
            "required": {
                "musetalk": ("DH_MUSETALK", {"tooltip": "From Load MuseTalk: the lip-sync networks."}),
                "avatar": ("DH_MUSETALK_AVATAR", {"tooltip": "From MuseTalk Prepare Avatar or Load Avatar: the face that speaks (a video loops forwards and backwards while idle; a portrait stays still)."}),
                "session_name": ("STRING", {"default": "live", "tooltip": "Name of the session in the panel. Queueing again with the same name updates (or restarts) that session and keeps its link."}),
                "fps": ("FLOAT", {"default": float(media["fps"]), "min": 10.0, "max": 60.0, "step": 1.0, "tooltip": "Frames per second of the stream (25 = as MuseTalk was trained)."}),
                "batch_size": ("INT", {"default": int(media["batch_size"]), "min": 1, "max": 64, "tooltip": "Frames per lip-sync pass once speaking (the first pass of an answer is smaller so it starts sooner). More is faster on a GPU."}),
                "max_side": ("INT", {"default": int(media["max_side"]), "min": 0, "max": 4096, "step": 2, "tooltip": "Longest side of the streamed (and recorded) picture; larger avatars are scaled down. 0 = the avatar's own size."}),
                "record": ("BOOLEAN", {"default": False, "tooltip": "Record the session (picture and sound, as shown) to an MP4 in the output folder, with its transcript and subtitles beside it. A recording cut by a server stop keeps its .partial.mp4 name and everything up to its last second."}),
            },
            "optional": {
                "voice": (VOICE_TYPE, {"tooltip": "A live voice (OpenAI / ElevenLabs Live Voice, or a CosyVoice voice). Without one only audio mode works."}),
                "chat": (CHAT_TYPE, {"tooltip": "A chat model for chat mode (from Chat Model). Needs a voice."}),
                "filename_prefix": ("STRING", {"default": "DigitalHuman/live", "tooltip": "Where recordings go in the output folder (subfolders allowed)."}),
            },
        }

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        return float("nan")  # every queue starts or updates the session

    def start(self, musetalk, avatar, session_name, fps, batch_size, max_side, record, voice=None, chat=None,
              filename_prefix="DigitalHuman/live"):
        import re

        from ..engine.live.record import Recorder
        from ..engine.live.registry import registry
        from ..engine.live.render import MuseTalkRenderer
        from ..engine.live.session import LiveOptions, LiveSession
        from ..engine.live.timeline import Picture
        from ..engine.musetalk.pipeline import AvatarCache

        name = (session_name or "").strip()
        if not re.fullmatch(r"[\w .-]{1,48}", name):
            raise ValueError(f"session_name '{session_name}' must be 1-48 letters, digits, spaces, '.', '-' or '_'")
        if avatar is None or not isinstance(avatar, AvatarCache):
            raise ValueError("avatar: connect a prepared MuseTalk avatar (MuseTalk Prepare Avatar or Load Avatar)")
        if chat is not None and voice is None:
            raise ValueError("chat: a chat model needs a voice to speak its answers; connect a live voice too")
        opts = LiveOptions.from_data(fps=float(fps), batch_size=int(batch_size), max_side=int(max_side),
                                     first_batch=min(int(batch_size), LiveOptions.from_data().first_batch))

        def make():
            renderer = MuseTalkRenderer(musetalk.models, avatar, opts.fps)
            rec = None
            if record:
                rec = Recorder(_record_base(filename_prefix, re.sub(r"\W+", "_", name)), opts.fps,
                               Picture(avatar.frames, opts.max_side).size, opts.out_sample_rate)
            try:
                return LiveSession(renderer, voice, chat, options=opts, name=name, recorder=rec)
            except BaseException:
                if rec is not None:
                    rec.close()
                raise

        fingerprint = (id(avatar), id(musetalk), opts.fps, opts.batch_size, opts.max_side, bool(record), filename_prefix)
        session, created = registry().start(name, make, fingerprint, update=lambda s: s.update(voice, chat, name))
        link = f"{PAGE}#s={session.id}"
        modes = ", ".join(session.modes)
        what = "started" if created else "updated"
        lines = [f"Live session '{name}' {what} ({session.size[0]}x{session.size[1]} at {opts.fps:g} fps; modes: {modes}). "
                 f"Open the Live panel, or {link}"]
        if session.recorder is not None:
            lines.append(f"Recording to {session.recorder.partial}")
        log.info("[DigitalHuman] %s", lines[0])
        return {"ui": {"text": lines, "dh_live": [{"id": session.id, "name": name, "link": link, "created": created}]},
                "result": (link,)}


class _LiveVoiceNode:
    """What every live-voice node shares: one output, a streaming voice for Live Session."""

    CATEGORY = CAT_REALTIME
    RETURN_TYPES = (VOICE_TYPE,)
    RETURN_NAMES = ("voice",)
    OUTPUT_TOOLTIPS = ("A streaming voice for Live Session.",)
    FUNCTION = "make"


class DH_OpenAILiveVoice(_LiveVoiceNode):
    DESCRIPTION = ("OpenAI's speech API (or an OpenAI-compatible speech server) as a live voice: raw 24 kHz audio streamed "
                   "as it is made. The key comes from OPENAI_API_KEY or the key file; a server on this machine or your "
                   "network needs none.")

    @classmethod
    def INPUT_TYPES(cls):
        from ..providers import openai_speech as oas

        r = oas.rules()
        return {"required": {
            "model": (list(r["models"]), {"default": r["default_model"], "tooltip": "gpt-4o-mini-tts follows instructions; tts-1 is the fastest to start."}),
            "voice": (list(r["voices"]), {"default": r["default_voice"], "tooltip": "Built-in OpenAI voice."}),
            "speed": ("FLOAT", {"default": 1.0, "min": r["speed_range"][0], "max": r["speed_range"][1], "step": 0.05, "tooltip": "Speaking speed (1.0 normal)."}),
            "instructions": ("STRING", {"multiline": True, "default": "", "tooltip": "How to speak (gpt-4o-mini-tts only), e.g. 'Warm and friendly'."}),
        }, "optional": {
            "base_url": ("STRING", {"default": "", "tooltip": "An OpenAI-compatible speech server (e.g. http://127.0.0.1:8880/v1). Empty: OPENAI_BASE_URL, else api.openai.com."}),
            "custom_voice": ("STRING", {"default": "", "tooltip": "A custom voice id (voice_...) or a voice name your server knows; replaces 'voice'."}),
        }}

    def make(self, model, voice, speed, instructions, base_url="", custom_voice=""):
        from ..providers.streaming_voices import OpenAIStreamingVoice

        return (OpenAIStreamingVoice(model, (custom_voice or "").strip() or voice, speed=float(speed),
                                     instructions=instructions, base_url=base_url),)


class DH_ElevenLabsLiveVoice(_LiveVoiceNode):
    DESCRIPTION = "ElevenLabs as a live voice (its /stream endpoint, raw PCM). The key comes from ELEVENLABS_API_KEY or the key file."

    @classmethod
    def INPUT_TYPES(cls):
        from ..providers import elevenlabs as el

        r = el.rules()
        pcm = [f for f in r["output_formats"] if f.startswith("pcm_")]
        return {"required": {
            "voice": ("STRING", {"default": r["default_voice_id"], "tooltip": "A voice id or the name of one of your ElevenLabs voices."}),
            "model": ([m for m in r["models"] if m != "default"], {"default": "eleven_flash_v2_5", "tooltip": "eleven_flash_v2_5 starts fastest (about 75 ms); multilingual_v2 sounds richest."}),
            "output_format": (pcm, {"default": "pcm_24000", "tooltip": "Raw PCM rate (resampled to 48 kHz for the stream)."}),
            "language_code": ("STRING", {"default": "", "tooltip": "ISO 639-1 code to force a language (empty: detected)."}),
            "speed": ("FLOAT", {"default": 1.0, "min": r["speed_range"][0], "max": r["speed_range"][1], "step": 0.05, "tooltip": "Speaking speed."}),
        }}

    def make(self, voice, model, output_format, language_code, speed):
        from ..providers.streaming_voices import ElevenLabsStreamingVoice

        return (ElevenLabsStreamingVoice(voice, model, output_format=output_format, language_code=language_code,
                                         speed=float(speed) if float(speed) != 1.0 else None),)


class DH_CosyVoiceLiveVoice(_LiveVoiceNode):
    DESCRIPTION = ("A cloned CosyVoice 2 voice as a live voice: each sentence is synthesised in streaming hops (the first "
                   "audio after about 25 speech tokens), locally, at no cost.")

    @classmethod
    def INPUT_TYPES(cls):
        from ..engine.cosyvoice.pipeline import MODES

        return {"required": {
            "cosyvoice": ("DH_COSYVOICE", {"tooltip": "From Load CosyVoice 2."}),
            "voice": ("DH_COSYVOICE_VOICE", {"tooltip": "From CosyVoice Clone Voice or CosyVoice Load Voice."}),
            "mode": (list(MODES), {"default": "zero_shot", "tooltip": "zero_shot: continue the clip's voice and manner (needs its transcript); cross_lingual: the voice in another language; instruct: with the style instruction below."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFF, "control_after_generate": True, "tooltip": "The same seed gives the same speech for the same sentence."}),
        }, "optional": {
            "instruct": ("STRING", {"multiline": True, "default": "", "tooltip": "instruct mode: how to speak, e.g. 'Speak warmly and calmly.'"}),
            "normalize_text": ("BOOLEAN", {"default": True, "tooltip": "Spell out numbers, dates and units before speaking."}),
        }}

    def make(self, cosyvoice, voice, mode, seed, instruct="", normalize_text=True):
        from ..engine.cosyvoice.live_voice import CosyVoiceStreamingVoice

        return (CosyVoiceStreamingVoice(cosyvoice.model, voice, mode=mode, instruct=instruct, seed=int(seed),
                                        normalize=bool(normalize_text)),)


class DH_ChatModel:
    DESCRIPTION = ("A chat model for Live Session's chat mode, behind any OpenAI-compatible chat-completions endpoint: "
                   "OpenAI, or a local Ollama (http://127.0.0.1:11434/v1), vLLM or llama.cpp server. Its answer is "
                   "streamed and spoken sentence by sentence while it is written.")
    CATEGORY = CAT_REALTIME
    RETURN_TYPES = (CHAT_TYPE,)
    RETURN_NAMES = ("chat",)
    OUTPUT_TOOLTIPS = ("The chat model, for Live Session.",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        from ..engine.live.config import section

        c = section("chat")
        return {"required": {
            "base_url": ("STRING", {"default": "https://api.openai.com/v1", "tooltip": "The endpoint's base URL (the part before /chat/completions)."}),
            "model": ("STRING", {"default": "gpt-4o-mini", "tooltip": "Model name as the server knows it (e.g. gpt-4o-mini, llama3.2, qwen2.5:7b)."}),
            "key_name": ("STRING", {"default": "OPENAI_API_KEY", "tooltip": "NAME of the environment variable (or key-file entry) holding the key, never the key itself. A server on this machine or a private network needs no key."}),
            "system_prompt": ("STRING", {"multiline": True, "default": "You are a friendly assistant. Answer in short spoken sentences, without lists or markdown.", "tooltip": "Who the avatar is and how it answers."}),
            "knowledge": ("STRING", {"multiline": True, "default": "", "tooltip": "Facts the avatar should answer from (opening hours, products, ...), sent with every message."}),
            "temperature": ("FLOAT", {"default": float(c["temperature"]), "min": 0.0, "max": 2.0, "step": 0.05, "tooltip": "Randomness of the answers."}),
            "max_tokens": ("INT", {"default": int(c["max_tokens"]), "min": 1, "max": 8192, "tooltip": "Longest answer, in tokens."}),
        }}

    def make(self, base_url, model, key_name, system_prompt, knowledge, temperature, max_tokens):
        from ..engine.live.config import section
        from ..providers.chat import ChatSettings, OpenAICompatibleChat

        return (OpenAICompatibleChat(base_url, ChatSettings(model.strip(), float(temperature), int(max_tokens)),
                                     key_name=(key_name or "").strip(), system_prompt=system_prompt, knowledge=knowledge,
                                     read_timeout_s=float(section("chat")["read_timeout_s"])),)


NODE_CLASS_MAPPINGS = {
    "DH_LiveSession": DH_LiveSession,
    "DH_OpenAILiveVoice": DH_OpenAILiveVoice,
    "DH_ElevenLabsLiveVoice": DH_ElevenLabsLiveVoice,
    "DH_CosyVoiceLiveVoice": DH_CosyVoiceLiveVoice,
    "DH_ChatModel": DH_ChatModel,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "DH_LiveSession": "Live Session",
    "DH_OpenAILiveVoice": "OpenAI Live Voice",
    "DH_ElevenLabsLiveVoice": "ElevenLabs Live Voice",
    "DH_CosyVoiceLiveVoice": "CosyVoice Live Voice",
    "DH_ChatModel": "Chat Model (OpenAI-compatible)",
}
