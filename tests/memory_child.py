"""Peak memory of Load Video's IMAGE path, measured in a fresh process (tests/unit/test_video_memory.py).

Run as ``python memory_child.py make <video> W H N`` or ``engine|node|save <video>``; prints one
JSON line. ``save`` measures Save Video writing an IMAGE batch that is already in memory,
``convert`` only its IMAGE -> uint8 chunks step (no encoder, whose buffers depend on the CPU count).
The peak is the resident-set high-water mark above the resident size just before the load:
Linux's VmHWM after resetting it (``/proc/self/clear_refs``), elsewhere ``ru_maxrss``.
"""
from __future__ import annotations

import json
import resource
import sys
from pathlib import Path


def rss_bytes() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return peak_bytes()


def reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:  # not Linux: ru_maxrss then includes the start-up peak (an over-estimate)
        pass


def peak_bytes() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def make(path: Path, width: int, height: int, frames: int) -> None:
    """A test video with detail in every frame (so the decoder does real work)."""
    import av
    import numpy as np

    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (height // 8, width // 8, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=25)
        v.width, v.height, v.pix_fmt = width, height, "yuv420p"
        v.options = {"preset": "ultrafast"}
        for i in range(frames):
            for pkt in v.encode(av.VideoFrame.from_ndarray(np.roll(base, 8 * i, axis=1), format="rgb24")):
                out.mux(pkt)
        for pkt in v.encode(None):
            out.mux(pkt)


def measure(mode: str, video: Path, work: Path | None) -> dict:
    import numpy as np

    from comfyui_digitalhuman.engine.media.video_io import VideoSource

    VideoSource(video, frame_cap=2).read_all()  # warm up: the decoder's libraries and threads
    if mode in ("node", "save", "convert"):
        from comfy_server import find_comfyui

        sys.path.append(str(find_comfyui()))
        import comfy.cli_args

        comfy.cli_args.args.cpu = True
        import folder_paths

        folder_paths.set_input_directory(str(video.parent))
        folder_paths.set_output_directory(str(video.parent / "out"))
        from comfyui_digitalhuman.nodes.video import DH_LoadVideo, DH_SaveVideo

        node = DH_LoadVideo()
        warm = node.load(video.name, 0.0, 0, 2, 1, True)["result"][0]  # warm up the node paths too
        DH_SaveVideo().save(25.0, "warm", "pad_or_trim", 23, "ultrafast", images=warm)
        if mode in ("save", "convert"):
            images = node.load(video.name, 0.0, 0, 0, 1, True)["result"][0]
    import gc

    gc.collect()
    before = rss_bytes()
    reset_peak()
    if mode == "engine":
        src = VideoSource(video)
        out = np.empty((src.frame_count, src.height, src.width, 3), np.float32)
        n = src.read_into(out)
        shape = list(out[:n].shape)
    elif mode == "node":
        images = node.load(video.name, 0.0, 0, 0, 1, True)["result"][0]
        shape = list(images.shape)
    elif mode == "save":
        DH_SaveVideo().save(25.0, "saved", "pad_or_trim", 23, "ultrafast", images=images)
        shape = list(images.shape)
    else:
        from comfyui_digitalhuman.engine.media.stream import FrameStream

        n = 0
        for chunk in FrameStream.from_images(images, 25.0).iter_chunks(16):  # as Save Video consumes it
            n += len(chunk)
            del chunk
        shape = [n, *images.shape[1:]]
    return {"peak": peak_bytes() - before, "shape": shape}


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    import _pack  # noqa: F401

    if sys.argv[1] == "make":
        make(Path(sys.argv[2]), *map(int, sys.argv[3:6]))
    else:
        print(json.dumps(measure(sys.argv[1], Path(sys.argv[2]), None)))
