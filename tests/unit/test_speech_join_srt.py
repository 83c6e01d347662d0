"""The common speech result: PCM/WAV decoding, joining pieces with pauses, timings, SRT round trip."""
from __future__ import annotations

import struct
import wave

import numpy as np
import pytest

from comfyui_digitalhuman.engine.speech.config import section
from comfyui_digitalhuman.engine.speech.join import PieceAudio, assemble, trim_bounds
from comfyui_digitalhuman.engine.speech.pcm import Pcm16Stream, decode_audio, parse_wav, pcm16_to_float, write_wav
from comfyui_digitalhuman.engine.speech.sentences import char_budget, plan_pieces
from comfyui_digitalhuman.engine.speech.srt import (cues_from_timings, format_timestamp, parse_srt, read_srt, to_srt,
                                                    wrap, write_srt)
from comfyui_digitalhuman.engine.speech.types import CharTimestamps, SentenceTiming, SpeechResult

SR = 24000
NO_TRIM = {"enabled": False, "threshold_dbfs": -50.0, "keep_s": 0.04}


def test_pcm16_stream_reassembles_samples_split_across_chunks():
    rng = np.random.default_rng(0)
    ints = rng.integers(-32768, 32767, 5001, dtype=np.int16)
    raw = ints.astype("<i2").tobytes()
    dec = Pcm16Stream()
    out, pos = [], 0
    for size in (1, 3, 1000, 7, 2, 4001, 5):  # odd sizes: a sample straddles almost every boundary
        out.append(dec.feed(raw[pos:pos + size]))
        pos += size
    out.append(dec.feed(raw[pos:]))
    got = np.concatenate(out)
    np.testing.assert_array_equal(got, ints.astype(np.float32) / 32768.0)
    assert dec.pending_bytes == 0 and dec.flush() == 0
    dec.feed(b"\x01\x02\x03")
    assert dec.pending_bytes == 1 and dec.flush() == 1
    with pytest.raises(ValueError, match="even number of bytes"):
        pcm16_to_float(b"\x00\x01\x02")


def _wav_header(n_bytes: int, sr: int, ch: int, bits: int, tag: int = 1, data_size: int | None = None) -> bytes:
    fmt = struct.pack("<HHIIHH", tag, ch, sr, sr * ch * bits // 8, ch * bits // 8, bits)
    size = n_bytes if data_size is None else data_size
    return (b"RIFF" + struct.pack("<I", 36 + n_bytes) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
            + b"LIST" + struct.pack("<I", 3) + b"abc\x00"  # an odd chunk before data, padded to even
            + b"data" + struct.pack("<I", size))


def test_parse_wav_variants():
    x = (np.arange(-2000, 2000, 7, dtype=np.int16))
    raw16 = x.astype("<i2").tobytes()
    got, sr = parse_wav(_wav_header(len(raw16), 22050, 1, 16) + raw16)
    assert sr == 22050
    np.testing.assert_array_equal(got, x.astype(np.float32) / 32768.0)
    # a streamed WAV's placeholder size means "to the end"
    for placeholder in (0, 0xFFFFFFFF):
        got, _ = parse_wav(_wav_header(len(raw16), SR, 1, 16, data_size=placeholder) + raw16)
        assert len(got) == len(x)
    # stereo is averaged; 24-bit and float32 are read
    st = np.stack([x, -x // 2], 1).astype("<i2").tobytes()
    got, _ = parse_wav(_wav_header(len(st), SR, 2, 16) + st)
    np.testing.assert_allclose(got, (x.astype(np.float32) + (-x // 2).astype(np.float32)) / 2 / 32768.0, atol=1e-7)
    v24 = (x.astype(np.int32) << 8)
    b24 = b"".join(int(v & 0xFFFFFF).to_bytes(3, "little") for v in v24)
    got, _ = parse_wav(_wav_header(len(b24), SR, 1, 24) + b24)
    np.testing.assert_allclose(got, x.astype(np.float32) / 32768.0, atol=1e-7)
    f32 = (x.astype(np.float32) / 32768.0).astype("<f4").tobytes()
    got, _ = parse_wav(_wav_header(len(f32), SR, 1, 32, tag=3) + f32)
    np.testing.assert_array_equal(got, x.astype(np.float32) / 32768.0)
    with pytest.raises(ValueError, match="not a WAV file"):
        parse_wav(b"ID3 mp3 bytes....")


def test_write_wav_reads_back(tmp_path):
    x = np.sin(np.linspace(0, 40, 4800)).astype(np.float32) * 0.5
    p = write_wav(tmp_path / "a.wav", x, SR)
    with wave.open(str(p)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (1, 2, SR, 4800)
    got, sr = decode_audio(p.read_bytes(), "wav")
    # 16-bit quantisation: at most half a step (1/32767 / 2) plus the 32767-vs-32768 scale difference
    assert sr == SR and np.max(np.abs(got - x)) <= 0.5 / 32767 + 0.5 / 32768


def test_decode_audio_errors():
    with pytest.raises(ValueError, match="returned no audio"):
        decode_audio(b"", "wav")
    with pytest.raises(ValueError, match="needs its sample rate"):
        decode_audio(b"\x00\x00", "pcm")
    with pytest.raises(ValueError, match="not readable audio|no audio stream"):
        decode_audio(b"definitely not an mp3 file" * 10, "mp3")


def test_trim_bounds_keeps_a_margin_of_silence():
    x = np.zeros(SR, np.float32)
    x[6000:9000] = 0.5
    a, b = trim_bounds(x, SR, -50.0, 0.04)
    assert (a, b) == (6000 - 960, 9000 + 960)
    assert trim_bounds(np.zeros(100, np.float32), SR, -50.0, 0.04) == (0, 100)  # all silent: kept whole
    assert trim_bounds(x, SR, -50.0, 1.0) == (0, SR)


def test_assemble_inserts_the_pause_of_each_boundary_kind():
    plan = plan_pieces("One two. Three four.\nFive six, seven eight nine ten.", [char_budget(25)], mode="sentence")
    kinds = [p.break_before for p in plan.pieces]
    assert kinds == ["start", "sentence", "paragraph", "clause"]
    parts = [np.full(100 * (i + 1), 0.1 * (i + 1), np.float32) for i in range(len(plan.pieces))]
    pauses = section("pauses")
    res = assemble(plan, [PieceAudio(p, SR) for p in parts], trim=NO_TRIM)
    expected = [parts[0]]
    for kind, p in zip(kinds[1:], parts[1:]):
        expected += [np.zeros(int(round(pauses[kind] * SR)), np.float32), p]
    np.testing.assert_array_equal(res.samples, np.concatenate(expected))
    # sentence 1 and 2 are whole pieces: their timings are the pieces' spans exactly
    p1_start = (100 + round(pauses["sentence"] * SR)) / SR
    assert res.sentences[1] == SentenceTiming("Three four.", pytest.approx(p1_start), pytest.approx(p1_start + 200 / SR))
    # the last sentence spans both of its pieces, across the clause pause
    last = res.sentences[2]
    assert last.text == "Five six, seven eight nine ten." and last.end_s == pytest.approx(res.duration_s)
    assert last.start_s == pytest.approx((len(res.samples) - 400 - round(pauses["clause"] * SR) - 300) / SR)


def test_assemble_trims_edges_before_the_pause():
    plan = plan_pieces("Hello there. General Kenobi.", [char_budget(100)], mode="sentence")
    tone = np.full(2400, 0.3, np.float32)
    lead = np.zeros(4800, np.float32)
    parts = [np.concatenate([lead, tone, lead]) for _ in range(2)]
    trim = section("trim")
    res = assemble(plan, [PieceAudio(p, SR) for p in parts], trim=trim)
    keep = int(round(trim["keep_s"] * SR))
    loud = np.flatnonzero(res.samples)
    gap = np.diff(loud).max() - 1  # silent samples between the two tones
    assert gap == keep + int(round(section("pauses")["sentence"] * SR)) + keep
    assert res.sentences[0].start_s == pytest.approx(0.0) and len(res.samples) == 2 * (keep + 2400 + keep) + gap - 2 * keep


def test_character_timestamps_time_the_sentences_exactly():
    text = "Hi there. Bye now."
    plan = plan_pieces(text, [char_budget(100)])
    n = 96  # samples per character
    starts = [k * n / SR for k in range(len(text))]
    chars = CharTimestamps(list(text), starts, [s + n / SR for s in starts])
    res = assemble(plan, [PieceAudio(np.full(n * len(text), 0.2, np.float32), SR, chars)], trim=NO_TRIM)
    assert res.sentences == [SentenceTiming("Hi there.", 0.0, pytest.approx(9 * n / SR)),
                             SentenceTiming("Bye now.", pytest.approx(10 * n / SR), pytest.approx(18 * n / SR))]
    assert res.chars.text == text
    with pytest.raises(ValueError, match="3 characters but 2 start"):
        CharTimestamps(["a", "b", "c"], [0, 1], [1, 2, 3])


def test_assemble_refuses_mixed_rates_and_counts():
    plan = plan_pieces("Ab cd. Ef gh.", [char_budget(100)], mode="sentence")
    with pytest.raises(ValueError, match="piece 1 is at 16000 Hz"):
        assemble(plan, [PieceAudio(np.zeros(10), SR), PieceAudio(np.zeros(10), 16000)])
    with pytest.raises(ValueError, match="2 pieces but 1 audio"):
        assemble(plan, [PieceAudio(np.zeros(10), SR)])


def test_speech_result_normalises_samples():
    r = SpeechResult(np.zeros((1, 480), np.float64), 24000, [("a", 0, 0.01)])
    assert r.samples.dtype == np.float32 and r.samples.shape == (480,) and r.duration_s == pytest.approx(0.02)
    assert r.sentences[0] == SentenceTiming("a", 0, 0.01)
    with pytest.raises(ValueError, match="mono samples"):
        SpeechResult(np.zeros((2, 10)), 24000)


def test_srt_written_and_read_back(tmp_path):
    timings = [SentenceTiming("Hello there.", 0.0, 1.2346),
               SentenceTiming("This is a fairly long subtitle sentence that has to wrap onto a second line.", 1.6, 5.0),
               SentenceTiming("这是一个很长的中文字幕，需要被分成两行才可以显示完整的内容。", 5.5, 9.0),
               SentenceTiming("Short.", 9.1, 9.15)]
    path = write_srt(tmp_path / "a.srt", timings)
    cues = read_srt(path)
    assert [c.text for c in cues] == [t.text for t in timings]
    assert [c.index for c in cues] == [1, 2, 3, 4]
    assert cues[0].start_s == 0.0 and cues[0].end_s == 1.235  # rounded to the millisecond
    assert all(len(line) <= 42 for line in cues[1].lines) and len(cues[1].lines) == 2
    assert all(len(line) <= 20 for line in cues[2].lines) and len(cues[2].lines) == 2
    assert cues[3].end_s == pytest.approx(9.1 + section("srt")["min_cue_s"])  # lengthened to the minimum
    raw = path.read_text(encoding="utf-8")
    assert raw.startswith("1\n00:00:00,000 --> 00:00:01,235\nHello there.\n\n2\n")


def test_long_sentence_becomes_several_timed_cues():
    text = ("When the quick brown fox jumps over the lazy dog, the dog wakes up, looks around, "
            "and decides that it is far too early in the morning to chase anything at all.")
    cues = cues_from_timings([SentenceTiming(text, 10.0, 20.0)])
    assert len(cues) == 2 and " ".join(c.text for c in cues) == text
    assert cues[0].start_s == 10.0 and cues[-1].end_s == pytest.approx(20.0)
    assert cues[0].end_s == pytest.approx(cues[1].start_s)
    # split in proportion to speakable characters
    w0 = sum(c.isalnum() for c in cues[0].text)
    w1 = sum(c.isalnum() for c in cues[1].text)
    assert cues[0].end_s == pytest.approx(10.0 + 10.0 * w0 / (w0 + w1))


def test_timestamp_format_and_parse_errors():
    assert format_timestamp(3661.0015) == "01:01:01,002" and format_timestamp(-1) == "00:00:00,000"
    assert wrap("short", 42, 2) == ("short",)
    with pytest.raises(ValueError, match="is not an SRT time"):
        parse_srt("1\n00:00:01 --> 00:00:02\nx\n")
    with pytest.raises(ValueError, match="does not start with a cue number"):
        parse_srt("one\n00:00:01,000 --> 00:00:02,000\nx\n")
    assert to_srt([]) == "" and parse_srt("\ufeff1\r\n00:00:01,000 --> 00:00:02,500\r\nHi\r\n")[0].end_s == 2.5
