"""CosyVoice 2 nodes (DigitalHuman/Speech): load the model, clone / save / load a voice, speak.

Speak gives the same outputs as the API voices (``speech_outputs``): core AUDIO at 24 kHz, a cost
(0: it runs locally), SRT subtitles and their file. Cloning needs only the two small ONNX
front-end networks, not the 0.6 B parameters of the synthesis networks; a saved voice
(``models/cosyvoice/voices/<name>.safetensors``) needs neither the clip nor the ONNX networks again.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..model_loaders.comfy_wrap import PRECISIONS
from .common import CAT_SPEECH, Progress, check_interrupt, comfy_to_audio
from .speech import SpeechNode, save_inputs, speech_outputs

log = logging.getLogger("DigitalHuman")

MODEL_TYPE = "DH_COSYVOICE"
VOICE_TYPE = "DH_COSYVOICE_VOICE"
VOICE_SUBDIR = "voices"
DEVICES = ["auto", "cpu", "cuda"]


class CosyVoiceHandle:
    """What flows on a DH_COSYVOICE link: the ModelPatcher of the three networks."""

    def __init__(self, patcher, dtype: torch.dtype):
        self.patcher, self.dtype = patcher, dtype

    def model(self):
        from ..model_loaders.comfy_wrap import load_for_inference

        return load_for_inference(self.patcher).model()


def _device(choice: str) -> torch.device:
    import comfy.model_management as mm

    if choice == "auto":
        return mm.get_torch_device()
    if choice == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: 'cuda' was chosen but no CUDA device is available; pick 'auto' or 'cpu'")
    return torch.device(choice)


def voices_dir() -> Path:
    """``models/cosyvoice/voices`` (created on first save)."""
    from ..model_loaders.folders import candidate_dirs

    return candidate_dirs("cosyvoice")[0] / VOICE_SUBDIR


def saved_voices() -> list[str]:
    """Names of the saved voices, for the Load Voice list."""
    from ..model_loaders.folders import candidate_dirs

    names = set()
    for base in candidate_dirs("cosyvoice"):
        d = base / VOICE_SUBDIR
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.safetensors") if p.is_file())
    return sorted(names)


def builtin_voices() -> dict:
    """``data/cosyvoice_voices.json``: voices cloned once from a published clip and its transcript."""
    from ..engine.data_files import read_json, without_notes
    from ..model_loaders.folders import PACK_ROOT

    return without_notes(read_json(PACK_ROOT / "data" / "cosyvoice_voices.json", "built-in CosyVoice voices"))


def builtin_voice(name: str):
    """The built-in voice ``name``: its saved clone, or cloned now from its published clip (downloaded
    through the catalogue with the two ONNX networks) and saved for next time."""
    from ..engine.cosyvoice.config import load_config
    from ..engine.cosyvoice.pipeline import clone_voice
    from ..engine.cosyvoice.voice import load_voice, save_voice
    from ..engine.media.audio_io import load_audio
    from ..model_loaders import cosyvoice as loader
    from ..model_loaders.download import ensure_model

    path = voice_path(name)
    if path.is_file():
        return load_voice(path)
    spec = builtin_voices()[name]
    fetch = lambda mid: ensure_model(mid, progress=Progress(1), check_interrupt=check_interrupt)  # noqa: E731
    clip = fetch(spec["catalog_id"])
    wave, sr = load_audio(clip)
    tokenizer, speaker = loader.load_cloner(loader.ensure_files(fetch, loader.CLONE_IDS))
    voice, _ = clone_voice(wave, sr, spec["transcript"], tokenizer, speaker, cfg=load_config())
    voice.meta.update(builtin=name, source=spec["catalog_id"])
    save_voice(voice, path)
    log.info("[DigitalHuman] CosyVoice: built-in voice '%s' cloned from %s and saved as %s", name, clip, path)
    return voice


def voice_path(name: str) -> Path:
    from ..engine.cosyvoice.voice import check_voice_name

    return voices_dir() / f"{check_voice_name(name)}.safetensors"


class DH_LoadCosyVoice:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "precision": (PRECISIONS, {"default": "auto", "tooltip": "auto: fp16 on CUDA, fp32 on the CPU. bf16/fp16 halve the memory; HiFT's F0, source and iSTFT always run in fp32."}),
            "device": (DEVICES, {"default": "auto", "tooltip": "auto: ComfyUI's compute device. The networks are managed by ComfyUI (offloaded when another model needs the memory)."}),
        }}

    RETURN_TYPES = (MODEL_TYPE,)
    RETURN_NAMES = ("cosyvoice",)
    OUTPUT_TOOLTIPS = ("CosyVoice 2 (language model, flow decoder, HiFT vocoder, text front end).",)
    FUNCTION = "load"
    CATEGORY = CAT_SPEECH
    DESCRIPTION = ("Loads CosyVoice 2 (0.5 B, Apache-2.0, FunAudioLLM/CosyVoice2-0.5B): llm.pt, flow.pt, hift.pt and the "
                   "Qwen2 tokenizer, downloaded into models/cosyvoice on first use (about 2.6 GB) and checked.")

    def load(self, precision: str, device: str):
        from ..model_loaders import cosyvoice as loader
        from ..model_loaders.comfy_wrap import make_patcher, pick_dtype
        from ..model_loaders.download import ensure_model

        dev = _device(device)
        dtype = pick_dtype(precision, dev)
        files = loader.ensure_files(lambda mid: ensure_model(mid, progress=Progress(1), check_interrupt=check_interrupt))
        model = loader.load_cosyvoice(files, device="cpu", dtype=dtype)
        patcher = make_patcher(loader.CosyVoiceBundle(model))
        if device != "auto":
            patcher.load_device = dev
        return (CosyVoiceHandle(patcher, dtype),)


class DH_CosyVoiceClone:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "reference_audio": ("AUDIO", {"tooltip": "1-30 s of one person speaking (3-10 s of clean speech works best), any sample rate; channels are averaged."}),
            "transcript": ("STRING", {"multiline": True, "default": "", "tooltip": "What the clip says, word for word. Needed for zero_shot mode (the best likeness); without it the voice works in cross_lingual and instruct modes."}),
            "save_name": ("STRING", {"default": "", "tooltip": "Save the voice as models/cosyvoice/voices/<name>.safetensors for Load Voice (empty: do not save). Letters, digits, space, _ - ."}),
        }, "optional": {
            "overwrite": ("BOOLEAN", {"default": False, "tooltip": "Replace a saved voice of the same name."}),
        }}

    RETURN_TYPES = (VOICE_TYPE, "STRING")
    RETURN_NAMES = ("voice", "report")
    OUTPUT_TOOLTIPS = ("The cloned voice, for CosyVoice Speak.", "What was noticed about the clip (length, clipping, transcript).")
    FUNCTION = "clone"
    CATEGORY = CAT_SPEECH
    OUTPUT_NODE = True
    DESCRIPTION = ("Clones a voice from a short reference clip (CosyVoice 2 zero-shot prompt: speech tokens, x-vector and "
                   "mel of the clip). Runs the two small ONNX front-end networks on the CPU (downloaded on first use, "
                   "about 0.5 GB); the voice can be saved and reused without the clip.")

    def clone(self, reference_audio: dict, transcript: str, save_name: str, overwrite: bool = False):
        from ..engine.cosyvoice.config import load_config
        from ..engine.cosyvoice.pipeline import clone_voice
        from ..engine.cosyvoice.voice import save_voice
        from ..model_loaders import cosyvoice as loader
        from ..model_loaders.download import ensure_model

        path = voice_path(save_name) if (save_name or "").strip() else None  # a bad name fails before any work
        if path is not None and path.exists() and not overwrite:
            raise ValueError(f"save_name: a voice named '{save_name.strip()}' exists ({path}); choose another name or turn on overwrite")
        wave, sr = comfy_to_audio(reference_audio, "reference_audio")
        files = loader.ensure_files(lambda mid: ensure_model(mid, progress=Progress(1), check_interrupt=check_interrupt),
                                    loader.CLONE_IDS)
        check_interrupt()
        tokenizer, speaker = loader.load_cloner(files)
        voice, report = clone_voice(wave, sr, transcript, tokenizer, speaker, cfg=load_config())
        lines = [f"voice from {report.seconds:.1f} s of audio ({voice.speech_tokens.shape[0]} speech tokens)"] + report.warnings
        if path is not None:
            save_voice(voice, path)
            lines.append(f"saved as {path}")
        for w in report.warnings:
            log.warning("[DigitalHuman] CosyVoice Clone: %s", w)
        return {"ui": {"text": ["; ".join(lines)]}, "result": (voice, "\n".join(lines))}


class DH_CosyVoiceLoadVoice:
    @classmethod
    def INPUT_TYPES(cls):
        builtin = list(builtin_voices())
        try:
            names = [n for n in saved_voices() if n not in builtin]
        except Exception:  # noqa: BLE001 - no models folder yet: the built-in voices only, not a broken node
            names = []
        return {"required": {"voice_name": (builtin + names, {
            "default": builtin[0] if builtin else None,
            "tooltip": "A voice saved by CosyVoice Clone (models/cosyvoice/voices), or a built-in one: 'default' is the "
                       "CosyVoice reference's own example voice (a Chinese woman's; English works in cross_lingual mode), "
                       "cloned on first use."})}}

    RETURN_TYPES = (VOICE_TYPE,)
    RETURN_NAMES = ("voice",)
    OUTPUT_TOOLTIPS = ("The saved voice, for CosyVoice Speak.",)
    FUNCTION = "load"
    CATEGORY = CAT_SPEECH
    DESCRIPTION = ("Loads a voice saved by CosyVoice Clone (no reference clip and no ONNX network needed), or a built-in "
                   "voice, so a script can be spoken without a recording of one's own.")

    def load(self, voice_name: str):
        from ..engine.cosyvoice.voice import load_voice

        if voice_name in builtin_voices():
            return (builtin_voice(voice_name),)
        path = voice_path(voice_name)
        if not path.is_file():
            raise ValueError(f"voice_name: no saved voice '{voice_name}' in {path.parent}; clone one with CosyVoice Clone and a save_name")
        return (load_voice(path),)


class DH_CosyVoiceSpeak(SpeechNode):
    @classmethod
    def INPUT_TYPES(cls):
        from ..engine.cosyvoice.pipeline import MODES

        return {"required": {
            "cosyvoice": (MODEL_TYPE, {"tooltip": "From Load CosyVoice."}),
            "voice": (VOICE_TYPE, {"tooltip": "From CosyVoice Clone or CosyVoice Load Voice."}),
            "text": ("STRING", {"multiline": True, "default": "", "tooltip": "The script, any length, Chinese and/or English: numbers, dates, currency and units are read out as a speaker would. Line breaks are paragraph breaks (a longer pause). Tags such as [laughter] or <strong>word</strong> work; text with <|...|> markup is not normalised."}),
            "mode": (list(MODES), {"default": "zero_shot", "tooltip": "zero_shot: continue the clip's voice and manner (needs its transcript). cross_lingual: the clip's voice in another language than the clip's. instruct: the clip's voice with the style instruction below."}),
            "speed": ("FLOAT", {"default": 1.0, "min": 0.5, "max": 2.0, "step": 0.05, "tooltip": "Speaking rate (the reference stretches the mel; 1.0 keeps the model's own pace)."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFF, "control_after_generate": True, "tooltip": "The same seed gives the same speech; change it for another take (fixed keeps it)."}),
        }, "optional": {
            "instruct": ("STRING", {"multiline": True, "default": "", "tooltip": "instruct mode: how to speak, e.g. 'Speak happily, a little faster.' or '用四川话说这句话'."}),
            "normalize_text": ("BOOLEAN", {"default": True, "tooltip": "Spell out numbers, dates and units with wetext before speaking (the reference's text front end)."}),
            **save_inputs(),
        }}

    DESCRIPTION = ("Speaks a script in a cloned voice with CosyVoice 2, sentence by sentence (progress and Cancel per "
                   "piece, natural pauses between), and outputs 24 kHz core AUDIO with SRT subtitles. Runs locally: "
                   "cost 0.")

    def speak(self, cosyvoice: CosyVoiceHandle, voice, text: str, mode: str, speed: float, seed: int,
              instruct: str = "", normalize_text: bool = True, save_subtitles: bool = False,
              filename_prefix: str = "DigitalHuman/speech"):
        from ..engine.cosyvoice.pipeline import IncompleteSpeech, SpeakOptions, plan_script, synthesize
        from .speech import _keep_partial

        model = cosyvoice.model()
        plan = plan_script(text, model.cfg)  # empty text fails here, before any network runs
        bar = Progress(len(plan.pieces))
        opts = SpeakOptions(mode=mode, instruct=instruct, speed=float(speed), seed=int(seed), normalize=bool(normalize_text))
        try:
            with torch.inference_mode():
                result = synthesize(model, text, voice, opts, progress=bar, check_interrupt=check_interrupt)
        except IncompleteSpeech as exc:
            # what was spoken is kept: saved as a WAV + SRT in the output folder, named in the error or log
            err = _keep_partial(exc, filename_prefix, "DH_CosyVoiceSpeak")
            if type(exc.cause).__name__ == "InterruptProcessingException":
                log.warning("[DigitalHuman] %s", err)
                raise exc.cause from None
            raise err from exc.cause
        result.info["pieces"] = len(plan.pieces)
        return speech_outputs(result, save_subtitles, filename_prefix, "CosyVoice 2")


NODE_CLASS_MAPPINGS = {
    "DH_LoadCosyVoice": DH_LoadCosyVoice,
    "DH_CosyVoiceClone": DH_CosyVoiceClone,
    "DH_CosyVoiceLoadVoice": DH_CosyVoiceLoadVoice,
    "DH_CosyVoiceSpeak": DH_CosyVoiceSpeak,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "DH_LoadCosyVoice": "Load CosyVoice 2 (DigitalHuman)",
    "DH_CosyVoiceClone": "CosyVoice Clone Voice (DigitalHuman)",
    "DH_CosyVoiceLoadVoice": "CosyVoice Load Voice (DigitalHuman)",
    "DH_CosyVoiceSpeak": "CosyVoice Speak (DigitalHuman)",
}
