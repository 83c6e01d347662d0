"""Speech nodes (DigitalHuman/Speech): text -> core AUDIO, a cost, and SRT subtitles.

Every voice node returns the same outputs through :func:`speech_outputs`: AUDIO
``{"waveform": [1, 1, T], "sample_rate": sr}`` (so core audio nodes and MuseTalk take it), the
estimated cost in USD (for Cost Sum), the subtitles as SRT text, and the path of the ``.srt``
written into ComfyUI's output folder when ``save_subtitles`` is on.

No API key is ever a node input: keys come from the environment (``OPENAI_API_KEY``,
``ELEVENLABS_API_KEY``) or ``<ComfyUI user dir>/digitalhuman/keys.json`` (``providers/keys.py``).
A synthesis that fails after some pieces saves what was made (already paid for) as a WAV and its
SRT in the output folder and says where in the error.
"""
from __future__ import annotations

import logging
import os

from ..engine.speech.config import section
from ..engine.speech.pcm import write_wav
from ..engine.speech.srt import to_srt
from ..engine.speech.types import SpeechResult
from ..providers import elevenlabs as el
from ..providers import openai_speech as oas
from ..providers.speech_base import PartialSpeechError
from .common import CAT_SPEECH, Progress, audio_to_comfy, check_interrupt

log = logging.getLogger("DigitalHuman")

SPLIT_MODES = ["fill", "sentence"]
SPLIT_TOOLTIP = ("How a script is cut into requests. fill: as few requests as the provider's limit allows (whole sentences "
                 "packed together; the voice phrases them itself; subtitle times inside a request are estimated unless "
                 "character timestamps are on). sentence: one request per sentence, joined with the pauses of "
                 "data/speech.json (exact per-sentence times, more requests). Either way a text over the limit is split "
                 "at sentence boundaries, never rejected.")
PREFIX_TOOLTIP = "Name of the subtitle file in ComfyUI's output folder; may contain subfolders. A counter is appended."
RUN_ID_TOOLTIP = "Not sent to the API; change it to force a new, paid call instead of ComfyUI's cached result."


def _save_path(prefix: str, suffix: str) -> tuple[str, str]:
    """(full path, name relative to the output folder) of a new file ``<prefix>_<counter>_<suffix>``."""
    import folder_paths

    out_dir = folder_paths.get_output_directory()
    full_dir, name, counter, subfolder, _ = folder_paths.get_save_image_path(prefix, out_dir)
    filename = f"{name}_{counter:05}_{suffix}"
    os.makedirs(full_dir, exist_ok=True)
    return os.path.join(full_dir, filename), os.path.join(subfolder, filename)


def speech_outputs(result: SpeechResult, save_subtitles: bool, filename_prefix: str, node: str) -> dict:
    """The node return value of any voice: AUDIO, cost, SRT text, SRT path (or "") and a UI summary."""
    srt_text = to_srt(result.sentences, section("srt"))
    srt_path = ""
    if save_subtitles:
        srt_path, rel = _save_path(filename_prefix or "DigitalHuman/speech", ".srt")
        with open(srt_path, "w", encoding="utf-8", newline="\n") as f:
            f.write(srt_text)
    audio = audio_to_comfy(result.samples[None, :], result.sample_rate)
    basis = result.info.get("cost_basis")
    summary = (f"{node}: {result.duration_s:.1f} s at {result.sample_rate} Hz, {len(result.sentences)} sentences in "
               f"{result.info.get('pieces', 1)} request(s), ${result.cost_usd:.4f}"
               + (f" ({basis})" if basis else "") + (f"; subtitles: {srt_path}" if srt_path else ""))
    log.info("[DigitalHuman] %s", summary)
    return {"ui": {"text": [summary]}, "result": (audio, float(result.cost_usd), srt_text, srt_path)}


def _keep_partial(exc: PartialSpeechError, filename_prefix: str, node: str) -> RuntimeError:
    """Save the speech made before a failure and return the error to raise (naming the files)."""
    where = ""
    if exc.partial is not None and len(exc.partial.samples):
        wav_path, _ = _save_path((filename_prefix or "DigitalHuman/speech") + "_partial", ".wav")
        write_wav(wav_path, exc.partial.samples, exc.partial.sample_rate)
        srt_path = wav_path[:-4] + ".srt"
        with open(srt_path, "w", encoding="utf-8", newline="\n") as f:
            f.write(to_srt(exc.partial.sentences, section("srt")))
        where = f" Saved to {wav_path} (+ .srt)."
    return RuntimeError(f"{node}: {exc}{where}")


class SpeechNode:
    """What every text-to-speech node shares: the four outputs of speech_outputs()."""

    RETURN_TYPES = ("AUDIO", "FLOAT", "STRING", "STRING")
    RETURN_NAMES = ("audio", "cost_usd", "subtitles", "subtitle_path")
    OUTPUT_TOOLTIPS = ("The speech as core AUDIO (mono, at the voice's sample rate).",
                       "Estimated cost of this call in USD from data/prices.json (connect to Cost Sum).",
                       "Per-sentence subtitles as SRT text.",
                       "Path of the saved .srt in the output folder, or empty when save_subtitles is off.")
    FUNCTION = "speak"
    CATEGORY = CAT_SPEECH


def save_inputs() -> dict:
    """The optional inputs that go with speech_outputs(): whether to write the .srt, and where."""
    return {
        "save_subtitles": ("BOOLEAN", {"default": False, "tooltip": "Also write the subtitles as an .srt file into ComfyUI's output folder."}),
        "filename_prefix": ("STRING", {"default": "DigitalHuman/speech", "tooltip": PREFIX_TOOLTIP}),
    }


class DH_OpenAISpeech(SpeechNode):
    """Text -> speech with OpenAI's speech endpoint (gpt-4o-mini-tts, tts-1, tts-1-hd)."""

    @classmethod
    def INPUT_TYPES(cls):
        r = oas.rules()
        return {"required": {
            "text": ("STRING", {"multiline": True, "default": "",
                                "tooltip": "The script to speak, any length: over 4096 characters it is split at sentence boundaries and joined. Line breaks are paragraph breaks."}),
            "model": (list(r["models"]), {"default": r["default_model"],
                                          "tooltip": "gpt-4o-mini-tts follows instructions (priced per token, estimated per minute); tts-1 is fast, tts-1-hd higher quality (both per character)."}),
            "voice": (list(r["voices"]), {"default": r["default_voice"], "tooltip": "Built-in OpenAI voice."}),
            "instructions": ("STRING", {"multiline": True, "default": "",
                                        "tooltip": "How to speak (tone, pace, accent, emotion), e.g. 'Warm and calm, like a teacher'. Only gpt-4o-mini-tts uses it; other models ignore it."}),
            "speed": ("FLOAT", {"default": 1.0, "min": r["speed_range"][0], "max": r["speed_range"][1], "step": 0.05,
                                "tooltip": "Speaking speed, 0.25 to 4.0 (1.0 normal)."}),
            "format": (list(r["formats"]), {"default": "wav",
                                            "tooltip": "Transfer format from the API; the output is decoded audio either way. wav/pcm are lossless 24 kHz; mp3/opus/aac/flac are smaller downloads."}),
            "split": (SPLIT_MODES, {"default": "fill", "tooltip": SPLIT_TOOLTIP}),
            "run_id": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFF, "control_after_generate": True, "tooltip": RUN_ID_TOOLTIP}),
        }, "optional": {
            "custom_voice": ("STRING", {"default": "", "tooltip": "A custom voice id (voice_...) of your OpenAI organisation; when given it replaces 'voice'."}),
            **save_inputs(),
        }}

    DESCRIPTION = ("Speaks a script with OpenAI's speech API (POST /v1/audio/speech). Long scripts are split at sentence "
                   "boundaries under the 4096-character limit and joined with natural pauses; outputs core AUDIO, the "
                   "estimated cost and SRT subtitles. The key is read from OPENAI_API_KEY or "
                   "<ComfyUI user dir>/digitalhuman/keys.json, never from the workflow; OPENAI_BASE_URL overrides the endpoint.")

    def speak(self, text: str, model: str, voice: str, instructions: str, speed: float, format: str, split: str,
              run_id: int, custom_voice: str = "", save_subtitles: bool = False,
              filename_prefix: str = "DigitalHuman/speech"):
        opts = oas.OpenAISpeechOptions(model=model, voice=(custom_voice or "").strip() or voice,
                                       response_format=format, speed=speed, instructions=instructions)
        client = oas.OpenAISpeech(check_interrupt=check_interrupt)
        bar = Progress(1)
        try:
            result = client.synthesize(text, opts, split=split, progress=bar)
        except PartialSpeechError as exc:
            raise _keep_partial(exc, filename_prefix, "DH_OpenAISpeech") from exc.cause
        return speech_outputs(result, save_subtitles, filename_prefix, "OpenAI speech")


class DH_ElevenLabsSpeech(SpeechNode):
    """Text -> speech with ElevenLabs (multilingual v2, v3, flash/turbo), optionally with character timestamps."""

    @classmethod
    def INPUT_TYPES(cls):
        r = el.rules()
        d = r["voice_settings_defaults"]
        models = [m for m in r["models"] if m != "default"]
        return {"required": {
            "text": ("STRING", {"multiline": True, "default": "",
                                "tooltip": "The script to speak, any length: over the model's character limit it is split at sentence boundaries and joined. Line breaks are paragraph breaks."}),
            "voice": ("STRING", {"default": r["default_voice_id"],
                                 "tooltip": "A voice id (20 letters and digits) or the name of one of your ElevenLabs voices (looked up in GET /v1/voices)."}),
            "model": (models, {"default": r["default_model"],
                               "tooltip": "eleven_multilingual_v2: most stable, 10,000 characters a request; eleven_v3: most expressive; flash/turbo: fastest and half the credits."}),
            "output_format": (list(r["output_formats"]), {"default": r["default_output_format"],
                                                          "tooltip": "Format and sample rate the API sends (pcm_<rate> is lossless 16-bit; pcm_44100 needs a Pro plan). The output keeps that rate."}),
            "timestamps": ("BOOLEAN", {"default": True,
                                       "tooltip": "Ask for character timestamps (the /with-timestamps endpoint): exact subtitle times at no extra cost."}),
            "split": (SPLIT_MODES, {"default": "fill", "tooltip": SPLIT_TOOLTIP}),
            "run_id": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFF, "control_after_generate": True, "tooltip": RUN_ID_TOOLTIP}),
        }, "optional": {
            "override_voice_settings": ("BOOLEAN", {"default": False,
                                                    "tooltip": "Send the five settings below for this request; off keeps the voice's own stored settings."}),
            "stability": ("FLOAT", {"default": d["stability"], "min": 0.0, "max": 1.0, "step": 0.01,
                                    "tooltip": "Higher is steadier and more monotone, lower more expressive (used when override is on)."}),
            "similarity_boost": ("FLOAT", {"default": d["similarity_boost"], "min": 0.0, "max": 1.0, "step": 0.01,
                                           "tooltip": "How closely to stick to the original voice (used when override is on)."}),
            "style": ("FLOAT", {"default": d["style"], "min": 0.0, "max": 1.0, "step": 0.01,
                                "tooltip": "Style exaggeration; above 0 costs latency (used when override is on)."}),
            "use_speaker_boost": ("BOOLEAN", {"default": d["use_speaker_boost"],
                                              "tooltip": "Boost similarity to the speaker (used when override is on)."}),
            "speed": ("FLOAT", {"default": d["speed"], "min": r["speed_range"][0], "max": r["speed_range"][1], "step": 0.01,
                                "tooltip": "Speaking speed 0.7 to 1.2 (used when override is on)."}),
            "language_code": ("STRING", {"default": "", "tooltip": "ISO 639-1 code to enforce a language (flash/turbo v2.5); empty lets the model infer it."}),
            "seed": ("INT", {"default": -1, "min": -1, "max": 4294967295,
                             "tooltip": "Best-effort deterministic sampling; -1 sends no seed."}),
            **save_inputs(),
        }}

    DESCRIPTION = ("Speaks a script with ElevenLabs text to speech (POST /v1/text-to-speech/{voice_id}). Long scripts are "
                   "split at sentence boundaries under the model's limit, stitched with previous request ids and joined "
                   "with natural pauses; outputs core AUDIO, the estimated cost (credits x your plan's rate in "
                   "data/prices.json) and SRT subtitles, exact with timestamps on. The key is read from ELEVENLABS_API_KEY "
                   "or <ComfyUI user dir>/digitalhuman/keys.json, never from the workflow; ELEVENLABS_BASE_URL overrides the endpoint.")

    def speak(self, text: str, voice: str, model: str, output_format: str, timestamps: bool, split: str, run_id: int,
              override_voice_settings: bool = False, stability: float = 0.5, similarity_boost: float = 0.75,
              style: float = 0.0, use_speaker_boost: bool = True, speed: float = 1.0, language_code: str = "",
              seed: int = -1, save_subtitles: bool = False, filename_prefix: str = "DigitalHuman/speech"):
        settings = (el.VoiceSettings(stability, similarity_boost, style, use_speaker_boost, speed)
                    if override_voice_settings else None)
        opts = el.ElevenLabsOptions(voice_id=voice, model_id=model, output_format=output_format, voice_settings=settings,
                                    language_code=(language_code or "").strip(), seed=None if seed < 0 else int(seed),
                                    timestamps=bool(timestamps))
        client = el.ElevenLabs(check_interrupt=check_interrupt)
        bar = Progress(1)
        try:
            result = client.synthesize(text, opts, split=split, progress=bar)
        except PartialSpeechError as exc:
            raise _keep_partial(exc, filename_prefix, "DH_ElevenLabsSpeech") from exc.cause
        return speech_outputs(result, save_subtitles, filename_prefix, "ElevenLabs speech")


NODE_CLASS_MAPPINGS = {
    "DH_OpenAISpeech": DH_OpenAISpeech,
    "DH_ElevenLabsSpeech": DH_ElevenLabsSpeech,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "DH_OpenAISpeech": "OpenAI Speech (DigitalHuman)",
    "DH_ElevenLabsSpeech": "ElevenLabs Speech (DigitalHuman)",
}
