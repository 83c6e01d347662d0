"""Cost estimates from the price table ``data/prices.json`` (kept as data so it is easy to update)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ..engine.data_files import read_json

log = logging.getLogger("DigitalHuman.prices")

PRICES_FILE = Path(__file__).resolve().parents[1] / "data" / "prices.json"


def load_prices(path: str | None = None) -> dict:
    """The parsed price table (cached); ``path`` overrides the pack's ``data/prices.json``."""
    return read_json(path or PRICES_FILE, "price table")


@dataclass
class ImagePrice:
    """Price of one image and whether it came from the fallback row (an estimate for an unknown model)."""

    usd_per_image: float
    model_row: str
    estimated: bool


def image_price(model: str, quality: str = "auto", size: str = "auto", prices: dict | None = None) -> ImagePrice:
    """USD per image for ``model`` at ``quality``/``size``; unknown models use the ``default`` row."""
    table = (prices or load_prices())["images"]
    row_name = model if model in table and not model.startswith("_") else "default"
    q = quality if quality in table[row_name] else "medium"
    row = table[row_name][q]
    s = size if size in row else "1024x1024"
    estimated = row_name == "default" or q != quality and quality != "auto" or s != size and size != "auto"
    if row_name == "default":
        log.info("no price listed for image model '%s'; using the default row of the price table", model)
    return ImagePrice(float(row[s]), row_name, estimated)


def image_cost(model: str, quality: str, size: str, count: int, prices: dict | None = None) -> float:
    """Estimated USD for ``count`` images."""
    return round(image_price(model, quality, size, prices).usd_per_image * int(count), 6)


def parse_items(text: str, prices: dict | None = None) -> list[tuple[str, float, float]]:
    """``name: quantity`` lines -> [(name, quantity, usd)]; blank lines and ``#`` comments skipped."""
    items = {k: v for k, v in (prices or load_prices())["items"].items() if not k.startswith("_")}
    out = []
    for lineno, raw in enumerate((text or "").splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, qty = line.partition(":")
        name = name.strip()
        if not sep:
            qty = "1"
        if name not in items:
            raise ValueError(f"cost item line {lineno} '{raw.strip()}': unknown item '{name}'; known items: {', '.join(sorted(items))}")
        try:
            q = float(qty)
        except ValueError:
            raise ValueError(f"cost item line {lineno} '{raw.strip()}': quantity '{qty.strip()}' is not a number") from None
        if q < 0:
            raise ValueError(f"cost item line {lineno} '{raw.strip()}': quantity must not be negative")
        out.append((name, q, round(q * float(items[name]["usd"]), 6)))
    return out


def sum_costs(costs: list[tuple[str, float]], items_text: str = "", prices: dict | None = None) -> tuple[float, str]:
    """Total USD of named costs plus fixed items, and a readable breakdown (one line per entry)."""
    lines = []
    total = 0.0
    for label, usd in costs:
        total += float(usd)
        lines.append(f"{label}: ${float(usd):.3f}")
    table = (prices or load_prices())["items"]
    for name, q, usd in parse_items(items_text, prices):
        total += usd
        lines.append(f"{name}: {q:g} {table[name]['unit']}(s) x ${float(table[name]['usd']):.3f} = ${usd:.3f}")
    total = round(total, 6)
    lines.append(f"total: ${total:.3f} (estimate)")
    return total, "\n".join(lines)


# -- speech ----------------------------------------------------------------------------------------

@dataclass
class SpeechPrice:
    """USD of one synthesis and the rule applied ("characters", "tokens", "minutes", "credits").

    Rounded to 1e-9 USD, not to the cent: one sentence costs a few millionths of a dollar."""

    usd: float
    basis: str
    estimated: bool


def openai_speech_cost(model: str, chars: int, audio_seconds: float, usage: dict | None = None,
                       prices: dict | None = None) -> SpeechPrice:
    """OpenAI speech: per character (tts-1, tts-1-hd), per token when the usage is known
    (gpt-4o-mini-tts SSE), else per minute of the audio received (OpenAI's own estimate)."""
    table = (prices or load_prices())["speech"]["openai"]
    row_name = model if model in table and not model.startswith("_") else "default"
    row = table[row_name]
    if row_name == "default":
        log.info("no speech price listed for OpenAI model '%s'; using the default per-minute row", model)
    if "usd_per_1m_chars" in row:
        return SpeechPrice(round(chars * float(row["usd_per_1m_chars"]) / 1e6, 9), "characters", row_name == "default")
    if usage and "usd_per_1m_input_tokens" in row and usage.get("output_tokens") is not None:
        usd = (float(usage.get("input_tokens") or 0) * float(row["usd_per_1m_input_tokens"])
               + float(usage["output_tokens"]) * float(row["usd_per_1m_audio_tokens"])) / 1e6
        return SpeechPrice(round(usd, 9), "tokens", False)
    return SpeechPrice(round(audio_seconds / 60.0 * float(row["usd_per_minute"]), 9), "minutes", True)


def elevenlabs_speech_cost(model: str, chars: int, credits: float | None = None, plan: str | None = None,
                           prices: dict | None = None) -> SpeechPrice:
    """ElevenLabs: credits (the ``character-cost`` header when given, else characters x the model's
    credits per character) x USD per credit of ``plan`` (the table's 'plan' when None)."""
    table = (prices or load_prices())["speech"]["elevenlabs"]
    plan = plan or table["plan"]
    if plan not in table["usd_per_credit"]:
        raise ValueError(f"ElevenLabs plan '{plan}' is not in the price table; known: {', '.join(sorted(table['usd_per_credit']))}")
    per_char = table["credits_per_char"].get(model, table["credits_per_char"]["default"])
    used = float(credits) if credits is not None else chars * float(per_char)
    return SpeechPrice(round(used * float(table["usd_per_credit"][plan]), 9), "credits", credits is None)


# -- streaming avatars ------------------------------------------------------------------------------

@dataclass
class SessionPrice:
    """USD of one streaming-avatar session so far, the rule applied and whether it is an estimate."""

    usd: float
    basis: str
    estimated: bool
    credits: float | None = None


def streaming_avatar_cost(provider: str, *, seconds: float, mode: str = "", speech_seconds: float = 0.0,
                          sandbox: bool = False, plan: str | None = None, prices: dict | None = None) -> SessionPrice:
    """The cost of a session of ``provider`` ("liveavatar", "heygen", "did") that ran ``seconds``.

    LiveAvatar: credits per minute of session time by ``mode`` (FULL/LITE), at least ``min_minutes``
    (the escrowed minute) once started, x USD per credit of ``plan``; a sandbox session is free.
    HeyGen: minutes / minutes per credit x USD per credit of ``plan``. D-ID: minutes of streamed
    speech (``speech_seconds``) x USD per minute (an estimate).
    """
    table = (prices or load_prices())["streaming_avatars"]
    if provider not in table or provider.startswith("_"):
        raise ValueError(f"no streaming-avatar price for '{provider}'; known: "
                         f"{', '.join(k for k in table if not k.startswith('_'))}")
    row = table[provider]
    seconds = max(0.0, float(seconds))
    if provider == "liveavatar":
        if sandbox:
            return SessionPrice(0.0, "sandbox", False, 0.0)
        per_min = row["credits_per_minute"].get(mode.upper())
        if per_min is None:
            raise ValueError(f"LiveAvatar mode '{mode}' has no price; known: {', '.join(row['credits_per_minute'])}")
        minutes = max(float(row["min_minutes"]), seconds / 60.0) if seconds > 0 else 0.0
        credits = minutes * float(per_min)
        return SessionPrice(round(credits * _per_credit(row, plan, "LiveAvatar"), 6), "session minutes", False, round(credits, 4))
    if provider == "heygen":
        credits = seconds / 60.0 / float(row["minutes_per_credit"])
        return SessionPrice(round(credits * _per_credit(row, plan, "HeyGen"), 6), "session minutes", False, round(credits, 4))
    return SessionPrice(round(max(0.0, speech_seconds) / 60.0 * float(row["usd_per_minute"]), 6),
                        "speech minutes", bool(row.get("estimated", True)))


def _per_credit(row: dict, plan: str | None, name: str) -> float:
    plan = plan or row["plan"]
    if plan not in row["usd_per_credit"]:
        raise ValueError(f"{name} plan '{plan}' is not in the price table; known: {', '.join(sorted(row['usd_per_credit']))}")
    return float(row["usd_per_credit"][plan])
