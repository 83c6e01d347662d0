"""A small CosyVoice 2 in the published file layout, for tests and the fake hub.

Same architectures as the published networks, fewer layers and channels (the small configurations
the engine's ``random_*`` modules define); the files are written exactly as the published ones
(flat ``torch.save`` state dicts, the ``CosyVoice-BlankEN/`` tokenizer files and ``config.json``),
so they go through the real download, check and load path. The two ONNX networks are tiny graphs
with the published input/output contracts (the real ones are not needed to test our side):

- speech tokenizer: Whisper log-mel [1, 128, T] (+ int32 length) -> a stride-4 convolution to
  ``speech_token_size`` logits -> argmax, int64 [1, T/4], i.e. 25 tokens per second;
- CAM++: fbank [1, T, 80] -> RMS over time -> linear -> [1, 192].
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import torch

from comfyui_digitalhuman.engine.cosyvoice.config import published_config
from comfyui_digitalhuman.engine.cosyvoice.flow import small_flow_config
from comfyui_digitalhuman.engine.cosyvoice.random_flow import random_flow_state_dict
from comfyui_digitalhuman.engine.cosyvoice.random_hift import random_hift_state_dict
from comfyui_digitalhuman.engine.cosyvoice.random_hift import small_config as small_hift_config
from comfyui_digitalhuman.engine.cosyvoice.random_llm import random_llm_state_dict, small_llm_config, write_tiny_tokenizer

OPSET = 17


def small_config() -> dict:
    """The whole small configuration (published structure; smaller llm/qwen2/flow/hift sections).
    The streaming hop is the small flow's chunk (4 tokens), as the published hop equals its chunk."""
    cfg = published_config()
    cfg["llm"], cfg["qwen2"] = small_llm_config()
    cfg["flow"] = small_flow_config()
    cfg["hift"] = small_hift_config()
    chunk = int(cfg["flow"]["encoder"]["static_chunk_size"])
    cfg["streaming"].update(token_hop_len=chunk, token_max_hop_len=4 * chunk)
    return cfg


def _torch_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _onnx_bytes(graph) -> bytes:
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def speech_tokenizer_onnx(n_codes: int, seed: int = 0) -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(seed).uniform(-1, 1, (n_codes, 128, 4)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["feats", "W"], ["logits"], kernel_shape=[4], strides=[4]),
             helper.make_node("ArgMax", ["logits"], ["tokens"], axis=1, keepdims=0),
             helper.make_node("Cast", ["feats_length"], ["unused"], to=TensorProto.INT64)]
    graph = helper.make_graph(
        nodes, "tiny_speech_tokenizer",
        [helper.make_tensor_value_info("feats", TensorProto.FLOAT, [1, 128, "T"]),
         helper.make_tensor_value_info("feats_length", TensorProto.INT32, [1])],
        [helper.make_tensor_value_info("tokens", TensorProto.INT64, [1, "N"])],
        initializer=[numpy_helper.from_array(w, "W")])
    return _onnx_bytes(graph)


def campplus_onnx(seed: int = 1) -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = rng.uniform(-0.2, 0.2, (80, 192)).astype(np.float32)
    b = rng.uniform(-1, 1, 192).astype(np.float32)
    nodes = [helper.make_node("Mul", ["input", "input"], ["sq"]),
             helper.make_node("ReduceMean", ["sq"], ["ms"], axes=[1], keepdims=0),
             helper.make_node("Sqrt", ["ms"], ["rms"]),
             helper.make_node("MatMul", ["rms", "W"], ["proj"]),
             helper.make_node("Add", ["proj", "B"], ["embedding"])]
    graph = helper.make_graph(
        nodes, "tiny_campplus", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, "T", 80])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1, 192])],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")])
    return _onnx_bytes(graph)


def model_files(cfg: dict | None = None, seed: int = 0, tmp: Path | None = None) -> dict[str, bytes]:
    """``{catalogue id: file bytes}`` of a small CosyVoice 2 (synthesis and cloning files)."""
    import tempfile

    cfg = cfg or small_config()
    with tempfile.TemporaryDirectory() as d:
        tok = Path(d) / "tok"
        write_tiny_tokenizer(tok)
        files = {
            "cosyvoice.qwen_vocab": (tok / "vocab.json").read_bytes(),
            "cosyvoice.qwen_merges": (tok / "merges.txt").read_bytes(),
            "cosyvoice.qwen_tokenizer_config": (tok / "tokenizer_config.json").read_bytes(),
        }
    files["cosyvoice.qwen_config"] = json.dumps(cfg["qwen2"], indent=2).encode()
    files["cosyvoice.llm"] = _torch_bytes(random_llm_state_dict(cfg["llm"], cfg["qwen2"], seed, decoder_gain=4.0))
    files["cosyvoice.flow"] = _torch_bytes(random_flow_state_dict(cfg["flow"], seed))
    files["cosyvoice.hift"] = _torch_bytes(random_hift_state_dict(cfg["hift"], seed))
    files["cosyvoice.speech_tokenizer"] = speech_tokenizer_onnx(int(cfg["llm"]["speech_token_size"]), seed)
    files["cosyvoice.campplus"] = campplus_onnx(seed + 1)
    return files


def write_model_folder(root: Path, cfg: dict | None = None, seed: int = 0) -> dict[str, Path]:
    """Write :func:`model_files` where the catalogue puts them under ``root`` (a ``cosyvoice`` models
    folder); returns ``{catalogue id: path}``."""
    from comfyui_digitalhuman.model_loaders.catalog import get_model

    out = {}
    for mid, data in model_files(cfg, seed).items():
        path = Path(root) / get_model(mid).local
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        out[mid] = path
    return out


def write_config(path: Path, cfg: dict | None = None) -> Path:
    """The small configuration as a ``DH_COSYVOICE_CONFIG`` file."""
    Path(path).write_text(json.dumps(cfg or small_config(), indent=1, ensure_ascii=False), encoding="utf-8")
    return Path(path)


def example_voice_wav(testdata: Path, seconds: float = 3.0) -> bytes:
    """A stand-in for the reference's example clip (the built-in 'default' voice): real speech from
    the shared test media, as a WAV file."""
    import soundfile as sf

    wav, sr = sf.read(str(Path(testdata) / "yongen.wav"), dtype="float32", frames=int(48000 * seconds))
    buf = io.BytesIO()
    sf.write(buf, wav, sr, format="WAV")
    return buf.getvalue()


def serve_cosyvoice(hub, storage, overrides_dir: Path, testdata: Path, config_path: Path, seed: int = 0) -> Path:
    """Serve a small CosyVoice 2 on the fake hub and the default voice's clip on the fake web host,
    write their override entries, and write the small configuration (``DH_COSYVOICE_CONFIG``)."""
    import hashlib

    from comfyui_digitalhuman.model_loaders.catalog import CATALOG_DIR, get_model
    from tiny_models import publish, write_overrides

    cfg = small_config()
    publish(hub, model_files(cfg, seed), overrides_dir)
    mid = "cosyvoice.example_voice_zh"
    data = example_voice_wav(testdata)
    url = get_model(mid).urls[0]
    storage.add_url(url, data)
    raw = next(e for e in json.loads((CATALOG_DIR / "cosyvoice.json").read_text()) if e["id"] == mid)
    raw.update(urls=[storage.rebase(url)], size=len(data), sha256=hashlib.sha256(data).hexdigest())
    write_overrides(overrides_dir, "cosyvoice", [raw])
    return write_config(config_path, cfg)
