"""Step 4, real time, commercial: streaming avatars of LiveAvatar (HeyGen's successor), HeyGen's
legacy streaming API and D-ID, started, fed and stopped from a workflow, shown in the Live panel.

- **Streaming Avatar Session**: starts a provider's session (provider, avatar, voice, quality,
  language, max minutes) and registers it with the live panel; outputs the session and its cost so
  far. LiveAvatar LITE takes our own voice (CosyVoice or an API voice, 24 kHz PCM over its socket).
- **Streaming Avatar Speak**: text (said as written, or answered by the provider's model) or AUDIO
  into a running session; waits, if asked, until the avatar has said it.
- **Streaming Avatar Stop**: stops the session; outputs its final cost (for Cost Sum).
- **LiveAvatar Avatars & Voices**: the ids to put into the session node.

No key is a node input: keys come from LIVEAVATAR_API_KEY, HEYGEN_API_KEY, DID_API_KEY or the key
file; the page gets only the provider's short-lived media token. A session always stops: at its
max minutes, when the panel closes, when the prompt that started it is cancelled, when ComfyUI
shuts down, or when the provider ends it.
"""
from __future__ import annotations

import io
import logging
import re
import signal
import threading
import time

from .common import CAT_REALTIME, Progress, check_interrupt

log = logging.getLogger("DigitalHuman")

SESSION_TYPE = "DH_AVATAR_SESSION"
VOICE_TYPE = "DH_STREAMING_VOICE"
CHAT_TYPE = "DH_CHAT_MODEL"
PAGE = "/digitalhuman/live/page"
PROVIDERS = ("LiveAvatar FULL", "LiveAvatar LITE", "HeyGen (legacy)", "D-ID")
QUALITIES = ("high", "very_high", "medium", "low")


def _rules(section: str) -> dict:
    from ..providers.avatar_common import rules

    return rules(section)


def _portrait_png(image) -> bytes:
    """The first picture of an IMAGE batch as PNG, scaled to D-ID's largest side."""
    from PIL import Image

    from .common import image_to_uint8

    arr = image_to_uint8(image)[0]
    img = Image.fromarray(arr)
    side = int(_rules("did")["image_max_side"])
    if max(img.size) > side:
        img.thumbnail((side, side))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _backend(provider: str, avatar: str, voice_id: str, quality: str, language: str, sandbox: bool,
             context_id: str, knowledge: str, portrait, source_url: str):
    if provider.startswith("LiveAvatar"):
        from ..providers.liveavatar import LiveAvatarBackend, LiveAvatarConfig

        return LiveAvatarBackend(LiveAvatarConfig(mode=provider.split()[1], avatar_id=avatar, voice_id=voice_id,
                                                  context_id=context_id, language=language, quality=quality,
                                                  sandbox=sandbox))
    if provider.startswith("HeyGen"):
        from ..providers.heygen_streaming import HeyGenBackend

        return HeyGenBackend(avatar=avatar, quality="high" if quality == "very_high" else quality, voice_id=voice_id,
                             language=language, knowledge_base=knowledge)
    if provider == "D-ID":
        from ..providers.did_streams import DIDBackend

        voice = dict(_rules("did")["default_provider"])
        if voice_id.strip():
            voice["voice_id"] = voice_id.strip()
        return DIDBackend(portrait_png=_portrait_png(portrait) if portrait is not None else None,
                          source_url=source_url, voice=voice)
    raise ValueError(f"provider must be one of {', '.join(PROVIDERS)}, got '{provider}'")


# -- stopping when the prompt is cancelled or ComfyUI shuts down ---------------------------------

def _watch_prompt(session) -> None:
    """Close ``session`` if the prompt that started it is cancelled while it still runs (Cancel after
    this node, during a later one). Reads ComfyUI's queue defensively: without it, nothing is watched."""
    try:
        import comfy.model_management as mm
        from server import PromptServer
    except ImportError:
        return
    ps = getattr(PromptServer, "instance", None)
    pid = getattr(ps, "last_prompt_id", None)
    pq = getattr(ps, "prompt_queue", None)
    if pid is None or pq is None or not hasattr(pq, "currently_running"):
        return

    def running() -> bool:
        try:
            return any(len(item) > 1 and item[1] == pid for item in list(pq.currently_running.values()))
        except Exception:  # noqa: BLE001 (the dict changed under us: look again next time)
            return True

    def interrupted_in_history() -> bool:
        """The finished prompt's status lists ``execution_interrupted`` (ComfyUI records it there)."""
        for _ in range(20):
            try:
                entry = dict(getattr(pq, "history", {})).get(pid)
            except Exception:  # noqa: BLE001
                entry = None
            if entry is not None:
                msgs = ((entry.get("status") or {}).get("messages") or [])
                return any(isinstance(m, (list, tuple)) and m and m[0] == "execution_interrupted" for m in msgs)
            time.sleep(0.1)
        return False

    def loop() -> None:
        while session.state != "closed" and running():
            if mm.processing_interrupted():  # Cancel pressed: a node will notice soon; stop billing now
                session.close("the prompt that started it was cancelled")
                return
            time.sleep(0.25)
        if session.state != "closed" and interrupted_in_history():
            session.close("the prompt that started it was cancelled")

    threading.Thread(target=loop, name="dh-avatar-prompt-watch", daemon=True).start()


_SHUTDOWN_HOOKED = False


def _hook_shutdown() -> None:
    """On SIGTERM (a service manager stopping ComfyUI), stop every live session before exiting; a
    normal exit (Ctrl+C) closes them through the registry's exit handler. Only installed over the
    default handler, from the main thread (where ComfyUI imports the pack)."""
    global _SHUTDOWN_HOOKED
    if _SHUTDOWN_HOOKED or threading.current_thread() is not threading.main_thread():
        return
    try:
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return

        def on_term(signum, frame):
            try:
                from ..engine.live.registry import registry

                registry().close_all()
            finally:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.raise_signal(signal.SIGTERM)

        signal.signal(signal.SIGTERM, on_term)
        _SHUTDOWN_HOOKED = True
    except (ValueError, OSError, AttributeError):  # no signals here (a thread, an odd platform)
        pass


_hook_shutdown()


def _report(session, final: bool = False) -> str:
    usd, basis, est = session.cost()
    what = "cost" if final else "cost so far"
    return (f"{session.kind} '{session.name}': {session.state}, {session.elapsed_s / 60:.2f} min, {what} ${usd:.3f} "
            f"({basis}{', estimate' if est else ''})" + (f"; ended: {session.ended_reason}" if session.ended_reason else ""))


class DH_AvatarSessionStart:
    DESCRIPTION = ("Starts a streaming avatar of a provider and shows it in the Live panel (and at the link shown here): "
                   "LiveAvatar (HeyGen's successor; FULL = its own voice and model, LITE = our own voice drives it), "
                   "HeyGen's streaming API (legacy: kept while HeyGen serves it) or D-ID (a portrait, e.g. Step 1's). "
                   "Your browser gets only the provider's short-lived media token, never the API key (environment "
                   "variables LIVEAVATAR_API_KEY, HEYGEN_API_KEY, DID_API_KEY, or the key file). The session stops at "
                   "max_minutes, when the panel closes, when this prompt is cancelled or when ComfyUI stops; queue again "
                   "to restart it under the same name and link.")
    CATEGORY = CAT_REALTIME
    RETURN_TYPES = (SESSION_TYPE, "FLOAT")
    RETURN_NAMES = ("session", "cost_usd")
    OUTPUT_TOOLTIPS = ("The running session, for Streaming Avatar Speak and Stop.",
                       "Cost so far in USD (LiveAvatar bills its first minute at once); Stop gives the whole session's.")
    OUTPUT_NODE = True
    FUNCTION = "start"

    @classmethod
    def INPUT_TYPES(cls):
        s, la = _rules("session"), _rules("liveavatar")
        return {
            "required": {
                "provider": (list(PROVIDERS), {"default": PROVIDERS[0], "tooltip": "LiveAvatar FULL: the avatar speaks with LiveAvatar's voice and can answer through its model (2 credits/min). LiveAvatar LITE: our own voice (connect one) lip-synced by LiveAvatar (1 credit/min). HeyGen (legacy): HeyGen's Interactive Avatar API. D-ID: a portrait animated by D-ID Talks Streams."}),
                "avatar": ("STRING", {"default": "", "tooltip": "The avatar's id (LiveAvatar: a UUID, see LiveAvatar Avatars & Voices; HeyGen: an Interactive Avatar id or name). Empty with sandbox on: LiveAvatar's sandbox avatar. D-ID uses the portrait instead."}),
                "voice": ("STRING", {"default": "", "tooltip": "The provider's voice id (LiveAvatar FULL, HeyGen; D-ID: a Microsoft voice such as en-US-JennyNeural). Empty: the avatar's default. LITE speaks with the voice connected below."}),
                "quality": (list(QUALITIES), {"default": "high", "tooltip": "Video quality (HeyGen: high 720p, medium 480p, low 360p; very_high is LiveAvatar only)."}),
                "language": (list(la["languages"]), {"default": "en", "tooltip": "Language the avatar speaks and understands (LiveAvatar FULL, HeyGen)."}),
                "max_minutes": ("FLOAT", {"default": float(s["max_minutes"]), "min": 0.5, "max": float(s["max_minutes_limit"]), "step": 0.5, "tooltip": "The session is stopped after this many minutes, whatever happens, so a forgotten tab cannot run up a bill."}),
                "sandbox": ("BOOLEAN", {"default": False, "tooltip": "LiveAvatar only: the free sandbox (its sandbox avatar, sessions of about a minute, no credits)."}),
                "session_name": ("STRING", {"default": "avatar", "tooltip": "Name in the Live panel. Queueing again with the same name stops that session and starts a new one under the same link."}),
            },
            "optional": {
                "speech_voice": (VOICE_TYPE, {"tooltip": "LiveAvatar LITE: the voice that speaks (CosyVoice Live Voice, OpenAI or ElevenLabs Live Voice): its audio goes to LiveAvatar as 24 kHz PCM."}),
                "chat": (CHAT_TYPE, {"tooltip": "LiveAvatar LITE: a chat model for chat mode (our model answers, our voice speaks)."}),
                "portrait": ("IMAGE", {"tooltip": "D-ID: the face to animate (the first picture; uploaded to D-ID)."}),
                "source_url": ("STRING", {"default": "", "tooltip": "D-ID: an image URL instead of the portrait (https, or an s3:// URL from D-ID's upload)."}),
                "context_id": ("STRING", {"default": "", "tooltip": "LiveAvatar FULL: the context (persona, knowledge, opening line) its model answers with; without one the avatar only repeats."}),
                "knowledge": ("STRING", {"multiline": True, "default": "", "tooltip": "HeyGen: the prompt its chat mode answers with."}),
            },
        }

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        return float("nan")  # every queue starts a session

    def start(self, provider, avatar, voice, quality, language, max_minutes, sandbox, session_name, speech_voice=None,
              chat=None, portrait=None, source_url="", context_id="", knowledge=""):
        from ..engine.live.registry import registry
        from ..engine.live.remote import RemoteSession

        name = (session_name or "").strip()
        if not re.fullmatch(r"[\w .-]{1,48}", name):
            raise ValueError(f"session_name '{session_name}' must be 1-48 letters, digits, spaces, '.', '-' or '_'")
        if provider != "LiveAvatar LITE" and (speech_voice is not None or chat is not None):
            raise ValueError(f"speech_voice and chat drive LiveAvatar LITE only; {provider} speaks with its own voice")
        if provider == "LiveAvatar LITE" and speech_voice is None:
            log.info("[DigitalHuman] LiveAvatar LITE without a voice: only audio (clips) can be spoken")
        if provider == "D-ID" and portrait is None and not (source_url or "").strip():
            raise ValueError("D-ID needs a portrait: connect an IMAGE (e.g. Step 1's portrait) or give a source_url")
        if provider != "LiveAvatar FULL" and provider != "LiveAvatar LITE" and sandbox:
            raise ValueError("sandbox is LiveAvatar's free mode; turn it off for " + provider)
        backend = _backend(provider, avatar or "", voice or "", quality, language, bool(sandbox), context_id or "",
                           knowledge or "", portrait, source_url or "")
        session = RemoteSession(backend, name=name, max_minutes=float(max_minutes), voice=speech_voice, chat=chat,
                                settings=_rules("session"))
        bar = Progress(1)
        session, created = registry().start(name, lambda: session.start(check_interrupt), (time.time(), id(session)))
        bar(1)
        _watch_prompt(session)
        link = f"{PAGE}#s={session.id}"
        usd = session.cost_usd
        lines = [f"{session.kind} session '{name}' started (at most {float(max_minutes):g} min; modes: "
                 f"{', '.join(session.modes)}). Open the Live panel, or {link}", _report(session)]
        log.info("[DigitalHuman] %s", lines[0])
        return {"ui": {"text": lines, "dh_live": [{"id": session.id, "name": name, "link": link, "created": created}]},
                "result": (session, usd)}


def _mono(audio) -> tuple:
    import numpy as np

    wave = audio["waveform"]
    if wave.ndim != 3 or wave.shape[-1] == 0:
        raise ValueError(f"audio: expected a waveform [batch, channels, samples] with samples, got {tuple(wave.shape)}")
    x = wave[0].float().mean(0).cpu().numpy().astype(np.float32)
    return x, int(audio["sample_rate"])


class DH_AvatarSessionSpeak:
    DESCRIPTION = ("Makes a running streaming avatar say a text (repeat), answer it (chat: the provider's own model, or "
                   "our chat model for LiveAvatar LITE), or lip-sync an AUDIO (LiveAvatar LITE: resampled to 24 kHz; "
                   "D-ID: uploaded). A long script is sent sentence by sentence. Speaking into a session that has "
                   "ended is an error that says why it ended and what it cost.")
    CATEGORY = CAT_REALTIME
    RETURN_TYPES = (SESSION_TYPE, "FLOAT")
    RETURN_NAMES = ("session", "cost_usd")
    OUTPUT_TOOLTIPS = ("The same session (chain more Speak nodes, or Stop).", "Cost so far in USD.")
    FUNCTION = "speak"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "session": (SESSION_TYPE, {"tooltip": "From Streaming Avatar Session."}),
                "text": ("STRING", {"multiline": True, "default": "", "tooltip": "What to say (or ask, in chat mode). Leave empty to send only the audio."}),
                "mode": (["repeat", "chat"], {"default": "repeat", "tooltip": "repeat: said word for word. chat: the avatar answers it."}),
                "wait": ("BOOLEAN", {"default": True, "tooltip": "Wait until the avatar has said it (so a Stop after this node does not cut it off)."}),
            },
            "optional": {
                "audio": ("AUDIO", {"tooltip": "A clip to lip-sync (LiveAvatar LITE, D-ID), e.g. from CosyVoice Speak or Load Audio."}),
            },
        }

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        return float("nan")

    def speak(self, session, text, mode, wait, audio=None):
        from ..engine.live.remote import RemoteSession
        from ..engine.speech.sentences import char_budget, plan_pieces

        if not isinstance(session, RemoteSession):
            raise ValueError("session: connect the output of Streaming Avatar Session")
        text = text or ""
        if not text.strip() and audio is None:
            raise ValueError("nothing to say: give a text or connect an audio")
        pieces = []
        if text.strip():
            plan = plan_pieces(text, [char_budget(int(session.settings["max_text_chars"]))], "fill")
            pieces = [p.text for p in plan.pieces]
        total = len(pieces) + (1 if audio is not None else 0)
        bar = Progress(total)
        turns = []
        if audio is not None:
            samples, rate = _mono(audio)
            turns.append(session.play(samples, rate, label=f"audio ({len(samples) / rate:.1f} s)"))
        for p in pieces:
            turns.append(session.ask(p) if mode == "chat" else session.say(p))
        for i, t in enumerate(turns):
            turn = session.wait_turn(t, spoken=bool(wait), check=check_interrupt)
            bar(i + 1)
            if turn.error:
                raise RuntimeError(f"{session.kind} '{session.name}': {turn.error}")
            if turn.dropped and session.state == "closed":
                session._check_open()  # raises: why it ended and what it cost
        report = _report(session)
        return {"ui": {"text": [report]}, "result": (session, session.cost_usd)}


class DH_AvatarSessionStop:
    DESCRIPTION = "Stops a streaming avatar session at the provider and reports what it cost (connect cost_usd to Cost Sum)."
    CATEGORY = CAT_REALTIME
    RETURN_TYPES = ("FLOAT", "STRING")
    RETURN_NAMES = ("cost_usd", "report")
    OUTPUT_TOOLTIPS = ("The session's cost in USD (an estimate where the price table says so).",
                       "Provider, length, cost and why it ended.")
    OUTPUT_NODE = True
    FUNCTION = "stop"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"session": (SESSION_TYPE, {"tooltip": "From Streaming Avatar Session or Speak."})}}

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        return float("nan")

    def stop(self, session):
        from ..engine.live.registry import registry
        from ..engine.live.remote import RemoteSession

        if not isinstance(session, RemoteSession):
            raise ValueError("session: connect the output of Streaming Avatar Session")
        session.close("stopped by the Stop node")  # once; later calls (the registry's) do nothing
        if session.id:
            registry().close(session.id)
        report = _report(session, final=True)
        return {"ui": {"text": [report]}, "result": (session.cost_usd, report)}


class DH_LiveAvatarCatalog:
    DESCRIPTION = "Lists your LiveAvatar avatars (and the public ones) and the voices, with the ids Streaming Avatar Session takes."
    CATEGORY = CAT_REALTIME
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("listing",)
    OUTPUT_TOOLTIPS = ("One line per avatar and voice: id, name, details.",)
    OUTPUT_NODE = True
    FUNCTION = "list"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"public_avatars": ("BOOLEAN", {"default": True, "tooltip": "Also list LiveAvatar's public avatars."})}}

    def list(self, public_avatars):
        from ..providers.liveavatar import LiveAvatar

        api = LiveAvatar(check_interrupt=check_interrupt)
        lines = ["avatars:"]
        for a in api.list_avatars() + (api.list_avatars(public=True) if public_avatars else []):
            lines.append(f"  {a.get('id')}  {a.get('name', '')}  {a.get('type', '')} {a.get('status', '')}".rstrip())
        lines.append("voices:")
        for v in api.list_voices():
            lines.append(f"  {v.get('id')}  {v.get('name', '')}  {v.get('language', '')}".rstrip())
        text = "\n".join(lines)
        return {"ui": {"text": [text]}, "result": (text,)}


NODE_CLASS_MAPPINGS = {
    "DH_AvatarSessionStart": DH_AvatarSessionStart,
    "DH_AvatarSessionSpeak": DH_AvatarSessionSpeak,
    "DH_AvatarSessionStop": DH_AvatarSessionStop,
    "DH_LiveAvatarCatalog": DH_LiveAvatarCatalog,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "DH_AvatarSessionStart": "Streaming Avatar Session",
    "DH_AvatarSessionSpeak": "Streaming Avatar Speak",
    "DH_AvatarSessionStop": "Streaming Avatar Stop",
    "DH_LiveAvatarCatalog": "LiveAvatar Avatars & Voices",
}
