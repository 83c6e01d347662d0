"""Multichannel audio test files and their exact expected samples (tests/unit/test_media_multichannel.py).

The files are written with PyAV from *packed* frames (safe for any channel count); the expected
decode is computed here with numpy from the integers written, by the conversions FFmpeg
documents (s16 / 2**15, s32 / 2**31, (u8 - 128) / 2**7, float as is), so it does not depend on
the decoder under test. Run as a script (``python audio_cases.py decode|downmix|write ...``) it does the
work with 8 or more channels in a fresh process, so a crash fails the tests instead of killing
pytest.
"""
from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

# decoded sample format -> (container, codec, packed format the frames are written in, numpy dtype)
FORMATS = {
    "s16": ("wav", "pcm_s16le", "s16", np.int16),
    "s32": ("wav", "pcm_s32le", "s32", np.int32),
    "flt": ("wav", "pcm_f32le", "flt", np.float32),
    "dbl": ("wav", "pcm_f64le", "dbl", np.float64),
    "u8": ("wav", "pcm_u8", "u8", np.uint8),
    "s16p": ("wv", "wavpack", "s16", np.int16),
    "s32p": ("wv", "wavpack", "s32", np.int32),
    "fltp": ("wv", "wavpack", "flt", np.float32),
}
# WavPack stores a standard layout for every count; FFmpeg's NUT keeps an unnamed "N channels" one
UNNAMED_PLANAR = ("nut", "pcm_s16le_planar", "s16", np.int16)
SECONDS = 0.2


@dataclass(frozen=True)
class Case:
    channels: int
    rate: int
    fmt: str  # decoded sample format, a key of FORMATS
    named: bool = True  # the channel count's standard layout (7.1, ...) if it has one, else "N channels"
    read_rate: int = 0  # sample_rate asked of load_audio (0 = the file's)
    mono: bool = False

    @property
    def id(self) -> str:
        extra = ("" if self.named else "-unnamed") + (f"-to{self.read_rate}" if self.read_rate else "") + ("-mono" if self.mono else "")
        return f"{self.channels}ch-{self.rate}-{self.fmt}{extra}"


def layout_name(channels: int, named: bool) -> str:
    import av

    if named:
        try:
            return av.AudioLayout(f"{channels}c").name
        except ValueError:  # no standard layout for this count
            pass
    return f"{channels} channels"


def frequencies(channels: int) -> np.ndarray:
    """A different tone per channel (150 Hz + 200 Hz steps: all below 8 kHz audio's 4 kHz Nyquist)."""
    return 150.0 + 200.0 * np.arange(channels)


def written(case: Case) -> np.ndarray:
    """The samples written to the file, ``[C, T]`` in the file's integer/float type."""
    t = np.arange(int(round(SECONDS * case.rate))) / case.rate
    c = np.arange(case.channels)[:, None]
    x = (0.3 + 0.03 * c) * np.sin(2 * np.pi * frequencies(case.channels)[:, None] * t + 0.4 * c)
    dtype = FORMATS[case.fmt][3]
    if dtype == np.int16:
        return np.round(x * 2**15).astype(np.int16)
    if dtype == np.int32:
        return np.round(x * 2**31).astype(np.int32)
    if dtype == np.uint8:
        return np.round(x * 2**7 + 128).astype(np.uint8)
    return x.astype(dtype)


def expected(case: Case) -> np.ndarray:
    """float32 ``[C, T]`` the decoder must return at the file's rate (FFmpeg's sample conversions)."""
    w = written(case)
    if w.dtype == np.int16:
        return w.astype(np.float32) / np.float32(2**15)
    if w.dtype == np.int32:
        return w.astype(np.float32) / np.float32(2**31)
    if w.dtype == np.uint8:
        return (w.astype(np.float32) - 128) / np.float32(2**7)
    return w.astype(np.float32)


def write_case(case: Case, folder: Path) -> Path:
    import av

    container, codec, packed, _ = UNNAMED_PLANAR if (case.fmt == "s16p" and not case.named) else FORMATS[case.fmt]
    path = folder / f"{case.id}.{container}"
    layout = layout_name(case.channels, case.named)
    w = written(case)
    with av.open(str(path), "w") as out:
        s = out.add_stream(codec, rate=case.rate)
        s.layout = layout
        s.format = case.fmt
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(w.T).reshape(1, -1), format=packed, layout=layout)
        frame.sample_rate = case.rate
        frame.pts = 0
        for pkt in s.encode(frame):
            out.mux(pkt)
        for pkt in s.encode(None):
            out.mux(pkt)
    return path


def tones(channels: int, rate: int, seconds: float, amp: float = 0.2) -> np.ndarray:
    """float32 ``[C, T]``: channel c is a sine at ``frequencies(C)[c]``."""
    t = np.arange(int(round(seconds * rate))) / rate
    return (amp * np.sin(2 * np.pi * frequencies(channels)[:, None] * t)).astype(np.float32)


def tone_level(x: np.ndarray, sr: int, hz: float) -> float:
    """Amplitude of the sine at ``hz`` in ``x`` (Hann window, so nearby tones do not leak; the tones
    of :func:`frequencies` sit on FFT bins when ``len(x)`` is ``sr / 2``: no scalloping loss)."""
    w = np.hanning(len(x))
    spec = np.abs(np.fft.rfft(x * w)) * 2 / w.sum()
    k = int(round(hz * len(x) / sr))
    return float(spec[k - 1:k + 2].max())


def middle(wave: np.ndarray, sr: int) -> np.ndarray:
    """Half a second from 0.2 s on: past a codec's priming, and 2 Hz FFT bins for :func:`tone_level`."""
    return wave[..., sr // 5: sr // 5 + sr // 2]


def pcm16(wave: np.ndarray) -> np.ndarray:
    """float samples as the int16 a PCM file stores (decoded back exactly as ``x / 2**15``)."""
    return np.round(wave * 2**15).astype(np.int16)


def decode(cases_file: Path, out_dir: Path) -> None:
    """Write and decode every case; print each id before decoding so a crash names its case."""
    import av

    from comfyui_digitalhuman.engine.media.audio_io import load_audio

    for raw in json.loads(cases_file.read_text()):
        case = Case(**raw)
        print(f"case {case.id}", flush=True)
        path = write_case(case, out_dir)
        with av.open(str(path)) as c:
            cc = c.streams.audio[0].codec_context
            facts = {"codec_format": cc.format.name, "layout": cc.layout.name, "channels": cc.channels}
        wave, sr = load_audio(path, case.read_rate or None, case.mono)
        np.save(out_dir / f"{case.id}.npy", wave)
        (out_dir / f"{case.id}.json").write_text(json.dumps({"sr": sr, **facts}))
    print("done", flush=True)


def cases_json(cases: list[Case]) -> str:
    return json.dumps([asdict(c) for c in cases])


def downmix(out_dir: Path) -> None:
    """``fit_channels`` of one impulse per channel (the matrix) for 1..16 channels, and of a loud 7.1 mix."""
    from comfyui_digitalhuman.engine.media.downmix import fit_channels

    block = 64
    for n in range(1, 17):
        print(f"case {n}", flush=True)
        x = np.repeat(np.eye(n, dtype=np.float32) * 0.5, block, axis=0).T  # [C, n*block]: channel k on in block k
        d = fit_channels(np.ascontiguousarray(x), 48000)
        np.save(out_dir / f"impulses{n}.npy", d.wave.reshape(d.wave.shape[0], n, block)[:, :, block // 2])
        (out_dir / f"impulses{n}.json").write_text(json.dumps({"rule": d.rule, "gain_db": d.gain_db, "len": d.wave.shape[1]}))
    print("case loud", flush=True)
    d = fit_channels(np.full((8, 4800), 0.9, np.float32), 48000)
    np.save(out_dir / "loud.npy", d.wave)
    (out_dir / "loud.json").write_text(json.dumps({"rule": d.rule, "gain_db": d.gain_db}))
    print("done", flush=True)


def write(out_dir: Path) -> None:
    """``write_mp4`` with 2-, 8- and 16-channel audio; the written info and the file's decoded audio."""
    import av

    from comfyui_digitalhuman.engine.media.video_write import write_mp4

    frames = np.zeros((10, 32, 32, 3), np.uint8)
    for n in (2, 8, 16):
        print(f"case {n}", flush=True)
        info = write_mp4(out_dir / f"w{n}.mp4", frames, 10, audio=(tones(n, 48000, 1.0), 48000), preset="ultrafast")
        with av.open(str(out_dir / f"w{n}.mp4")) as c:
            a = c.streams.audio[0]
            wave = np.concatenate([f.to_ndarray() for f in c.decode(a)], axis=1)  # AAC: fltp, <= 2 channels
            facts = {"codec": a.codec_context.name, "channels": a.codec_context.channels}
        np.save(out_dir / f"w{n}.npy", wave)
        (out_dir / f"w{n}.json").write_text(json.dumps({**facts, "channels_in": info.audio_channels_in,
                                                          "channels_out": info.audio_channels, "rule": info.audio_downmix}))
    print("done", flush=True)


def write_video(path: Path, codec: str, wave: np.ndarray, rate: int, layout: str, fps: int = 10) -> None:
    """A small H.264 video (gray frames numbered by brightness) with ``wave`` [C, T] as its sound track."""
    import av

    n_frames = int(round(wave.shape[1] / rate * fps))
    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        v.options = {"preset": "ultrafast"}
        a = out.add_stream(codec, rate=rate)
        a.layout = layout
        if codec == "aac":
            a.bit_rate = 64000 * wave.shape[0]
        for i in range(n_frames):
            img = np.full((48, 64, 3), 10 + 20 * (i % 12), np.uint8)
            for pkt in v.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(pkt)
        packed = "s16" if wave.dtype == np.int16 else "flt"
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave.T).reshape(1, -1), format=packed, layout=layout)
        frame.sample_rate, frame.pts = rate, 0
        for pkt in a.encode(frame):
            out.mux(pkt)
        for stream in (v, a):
            for pkt in stream.encode(None):
                out.mux(pkt)


def nodes(work: Path) -> None:
    """DH_LoadAudio, DH_LoadVideo and DH_SaveVideo (real ComfyUI modules) on 7.1, 12- and 16-channel media."""
    import av
    from comfy_server import find_comfyui

    root = find_comfyui()
    sys.path.append(str(root))
    import comfy.cli_args

    comfy.cli_args.args.cpu = True
    import folder_paths

    for kind in ("input", "output", "temp"):
        (work / kind).mkdir(exist_ok=True)
        getattr(folder_paths, f"set_{kind}_directory")(str(work / kind))
    from comfyui_digitalhuman.nodes.audio import DH_LoadAudio
    from comfyui_digitalhuman.nodes.video import DH_LoadVideo, DH_SaveVideo

    wav = write_case(Case(8, 48000, "s16"), work / "input")
    print("case load_audio_7.1", flush=True)
    (audio,) = DH_LoadAudio().load(wav.name)
    np.save(work / "load_audio_7.1.npy", audio["waveform"].numpy())
    (work / "load_audio_7.1.json").write_text(json.dumps({"sr": audio["sample_rate"]}))
    videos = {  # name -> (codec, samples, layout)
        "aac71.mp4": ("aac", tones(8, 48000, 1.0), "7.1"),
        "pcm12.mkv": ("pcm_s16le", pcm16(tones(12, 48000, 1.0)), "12 channels"),
        "pcm16.mov": ("pcm_s16le", pcm16(tones(16, 44100, 1.0)), "16 channels"),
    }
    for name, (codec, wave, layout) in videos.items():
        rate = 44100 if name.endswith(".mov") else 48000
        write_video(work / "input" / name, codec, wave, rate, layout)
        print(f"case {name}", flush=True)
        images, audio, fps, count, stream = DH_LoadVideo().load(name, 0.0, 0, 0, 1, True)["result"]
        np.save(work / f"{name}.load.npy", audio["waveform"].numpy())
        print(f"case save {name}", flush=True)
        saved = DH_SaveVideo().save(fps, f"out_{name}", "pad_or_trim", 23, "ultrafast", images=images, audio=audio)
        out = Path(saved["result"][0])
        with av.open(str(out)) as c:
            a = c.streams.audio[0]
            got = np.concatenate([f.to_ndarray() for f in c.decode(a)], axis=1)  # AAC, <= 2 channels
            channels = a.codec_context.channels
        np.save(work / f"{name}.save.npy", got)
        (work / f"{name}.json").write_text(json.dumps({"sr": audio["sample_rate"], "fps": fps, "count": count,
                                                       "saved_channels": channels, "notes": saved["ui"]["text"]}))
    print("done", flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    import _pack  # noqa: F401

    {"decode": decode, "downmix": downmix, "write": write, "nodes": nodes}[sys.argv[1]](*map(Path, sys.argv[2:]))
