"""The CosyVoice 2 ONNX wrappers (speech tokenizer, CAM++) against small ONNX models built here
with the published input/output contracts (the real files are 0.5 GB and 28 MB and not needed):

- "tokenizer": float32 [1, 128, T] and int32 [1] -> a stride-4 conv to K logits, argmax, plus
  K * (length mod 3) so that the length input is visibly used; int64 [1, T/4] or [1, 1, T/4];
- "CAM++": float32 [1, T, 80] -> RMS over time, a linear layer -> float32 [1, 192].

Expected values are computed independently with NumPy from the same weights; the wrappers'
features come from ``features`` (tested on their own in test_cosyvoice_features.py).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import soundfile as sf
import torch
from onnx import TensorProto, helper, numpy_helper

from comfyui_digitalhuman.engine.cosyvoice import features as FE
from comfyui_digitalhuman.engine.cosyvoice import onnx_models as OM

K = 8  # tokenizer logits
OPSET = 17


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def tokenizer_weights(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (K, 128, 4)).astype(np.float32)


def make_tokenizer(path: Path, w: np.ndarray, three_d: bool = False, names=("x", "n")) -> Path:
    nodes = [
        helper.make_node("Conv", [names[0], "W"], ["logits"], kernel_shape=[4], strides=[4]),
        helper.make_node("ArgMax", ["logits"], ["tok"], axis=1, keepdims=0),
        helper.make_node("Cast", [names[1]], ["len64"], to=TensorProto.INT64),
        helper.make_node("Mod", ["len64", "three"], ["rem"]),
        helper.make_node("Mul", ["rem", "k"], ["shift"]),
        helper.make_node("Add", ["tok", "shift"], ["tokens2d"]),
    ]
    out = "tokens2d"
    if three_d:
        nodes.append(helper.make_node("Unsqueeze", ["tokens2d", "axis1"], ["tokens3d"]))
        out = "tokens3d"
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(np.array([3], np.int64), "three"),
             numpy_helper.from_array(np.array([K], np.int64), "k"), numpy_helper.from_array(np.array([1], np.int64), "axis1")]
    graph = helper.make_graph(
        nodes, "tiny_tokenizer",
        [helper.make_tensor_value_info(names[0], TensorProto.FLOAT, [1, 128, "T"]),
         helper.make_tensor_value_info(names[1], TensorProto.INT32, [1])],
        [helper.make_tensor_value_info(out, TensorProto.INT64, [1, 1, "N"] if three_d else [1, "N"])], initializer=inits)
    return _save(graph, path)


def expected_tokens(mel: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Tokens from a float64 evaluation, and each frame's gap between the two largest logits."""
    x = mel[0].astype(np.float64)
    n = x.shape[1] // 4
    frames = x[:, : 4 * n].reshape(128, n, 4).transpose(1, 0, 2)  # [n, 128, 4]
    logits = np.einsum("kcs,ncs->nk", w.astype(np.float64), frames)
    top2 = np.sort(logits, axis=1)[:, -2:]
    return logits.argmax(axis=1) + K * (x.shape[1] % 3), top2[:, 1] - top2[:, 0]


def campplus_weights(seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.uniform(-0.2, 0.2, (80, 192)).astype(np.float32), rng.uniform(-1, 1, 192).astype(np.float32)


def make_campplus(path: Path, w: np.ndarray, b: np.ndarray, name: str = "input") -> Path:
    nodes = [
        helper.make_node("Mul", [name, name], ["sq"]),
        helper.make_node("ReduceMean", ["sq"], ["ms"], axes=[1], keepdims=0),
        helper.make_node("Sqrt", ["ms"], ["rms"]),
        helper.make_node("MatMul", ["rms", "W"], ["proj"]),
        helper.make_node("Add", ["proj", "B"], ["emb"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny_campplus", [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, "T", 80])],
        [helper.make_tensor_value_info("emb", TensorProto.FLOAT, [1, w.shape[1]])],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")])
    return _save(graph, path)


@pytest.fixture(scope="module")
def eng16(testdata) -> torch.Tensor:
    x, sr = sf.read(str(testdata / "eng.wav"), dtype="float32", always_2d=True)
    assert sr == 16000
    return torch.from_numpy(x[:, 0].copy())


# -- speech tokenizer ---------------------------------------------------------------------------


@pytest.mark.parametrize("three_d", [False, True])
def test_tokenizer_feeds_mel_and_length_by_position(tmp_path, eng16, three_d):
    """Real speech (10 s of eng.wav) -> our whisper mel -> the tiny tokenizer. Argmax flips when two
    logits are within rounding of each other: float32 ONNX against float64 NumPy differ by at most
    n*u*sum|terms| = 512 * 2^-24 * sum|w x| per logit, so frames whose top-two gap is below
    twice that are skipped (and at least 95% of frames must be compared)."""
    w = tokenizer_weights()
    tok = OM.SpeechTokenizer(make_tokenizer(tmp_path / "tok.onnx", w, three_d=three_d))
    speech = eng16[: 10 * 16000 + 37]  # T = 1000 frames, T mod 3 = 1: the length shifts every token by K
    got = tok(speech)
    mel = FE.whisper_log_mel(speech).numpy()
    assert mel.shape == (1, 128, 1000)
    want, gap = expected_tokens(mel, w)
    assert got.dtype == torch.int64 and got.shape == (1, 250)
    x = mel[0].reshape(128, 250, 4).transpose(1, 0, 2)
    bound = 2 * 512 * 2.0 ** -24 * np.einsum("kcs,ncs->nk", np.abs(w), np.abs(x)).max(axis=1)
    stable = gap > bound
    assert stable.mean() > 0.95
    assert np.array_equal(got[0].numpy()[stable], want[stable])
    assert set(np.unique(got.numpy())) <= set(range(K, 2 * K))  # the length input was used
    # the mel itself can be given
    assert torch.equal(tok.tokens_from_mel(torch.from_numpy(mel)), got)


def test_tokenizer_takes_at_most_30_seconds(tmp_path, eng16):
    tok = OM.SpeechTokenizer(make_tokenizer(tmp_path / "tok.onnx", tokenizer_weights()))
    assert tok(eng16[: 30 * 16000]).shape == (1, 750)  # exactly 30 s is allowed, as in the reference
    with pytest.raises(ValueError, match=r"prompt audio is 30\.5 s long; the speech tokenizer takes at most 30 s"):
        tok(eng16[: 30 * 16000 + 8000])


def test_tokenizer_contract_errors_name_the_file(tmp_path):
    w = tokenizer_weights()
    one_input = helper.make_graph(
        [helper.make_node("Conv", ["x", "W"], ["l"], kernel_shape=[4], strides=[4]),
         helper.make_node("ArgMax", ["l"], ["t"], axis=1, keepdims=0)], "one",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 128, "T"])],
        [helper.make_tensor_value_info("t", TensorProto.INT64, [1, "N"])], initializer=[numpy_helper.from_array(w, "W")])
    path = _save(one_input, tmp_path / "one_input.onnx")
    with pytest.raises(ValueError, match=r"one_input\.onnx: the speech tokenizer takes 2 inputs .* this model has 1 \(x\)"):
        OM.SpeechTokenizer(path)
    # a float length where the contract says int32
    float_len = helper.make_graph(
        [helper.make_node("Conv", ["x", "W"], ["l"], kernel_shape=[4], strides=[4]),
         helper.make_node("ArgMax", ["l"], ["t"], axis=1, keepdims=0),
         helper.make_node("Identity", ["n"], ["m"])], "float_len",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 128, "T"]),
         helper.make_tensor_value_info("n", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("t", TensorProto.INT64, [1, "N"]), helper.make_tensor_value_info("m", TensorProto.FLOAT, [1])],
        initializer=[numpy_helper.from_array(w, "W")])
    path = _save(float_len, tmp_path / "float_len.onnx")
    with pytest.raises(ValueError, match=r"float_len\.onnx: the speech tokenizer's input 1 must be tensor\(int32\)"):
        OM.SpeechTokenizer(path)
    # float "tokens" are refused when they come back
    float_out = helper.make_graph(
        [helper.make_node("Conv", ["x", "W"], ["l"], kernel_shape=[4], strides=[4]),
         helper.make_node("Cast", ["n"], ["m"], to=TensorProto.FLOAT)], "float_out",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 128, "T"]),
         helper.make_tensor_value_info("n", TensorProto.INT32, [1])],
        [helper.make_tensor_value_info("l", TensorProto.FLOAT, [1, K, "N"]), helper.make_tensor_value_info("m", TensorProto.FLOAT, [1])],
        initializer=[numpy_helper.from_array(w, "W")])
    tok = OM.SpeechTokenizer(_save(float_out, tmp_path / "float_out.onnx"))
    with pytest.raises(ValueError, match=r"float_out\.onnx: the speech tokenizer must return integer tokens"):
        tok.tokens_from_mel(torch.zeros(1, 128, 40))
    with pytest.raises(ValueError, match=r"mel must be \[1, 128, frames\]"):
        tok.tokens_from_mel(torch.zeros(1, 80, 40))


# -- CAM++ --------------------------------------------------------------------------------------


def test_speaker_embedding_feeds_fbank_and_returns_192(tmp_path, eng16):
    w, b = campplus_weights()
    emb = OM.SpeakerEmbedding(make_campplus(tmp_path / "campplus.onnx", w, b, name="whatever"))
    speech = eng16[: 6 * 16000]
    got = emb(speech)
    feat = FE.campplus_fbank(speech).numpy().astype(np.float64)
    assert feat.shape == (598, 80)
    want = np.sqrt((feat ** 2).mean(axis=0)) @ w.astype(np.float64) + b
    assert got.dtype == torch.float32 and got.shape == (1, 192)
    # fp32 in ONNX: a mean of 598 squares (598*u relative), a sqrt, a 80-term dot product
    tol = (598 + 80 + 4) * 2.0 ** -24 * (np.sqrt((feat ** 2).mean(axis=0)) @ np.abs(w) + np.abs(b))
    assert np.all(np.abs(got.numpy()[0] - want) <= tol)
    assert torch.equal(emb.embedding_from_fbank(torch.from_numpy(feat.astype(np.float32))), got)
    # two voices give two embeddings
    assert not torch.allclose(emb(eng16[20 * 16000: 26 * 16000]), got)


def test_speaker_embedding_contract_errors_name_the_file(tmp_path):
    w, b = campplus_weights()
    path = make_campplus(tmp_path / "short.onnx", w[:, :100], b[:100])
    emb = OM.SpeakerEmbedding(path)
    with pytest.raises(ValueError, match=r"short\.onnx: the speaker embedding must return 192 float values, got float32 \[1, 100\]"):
        emb.embedding_from_fbank(torch.zeros(10, 80))
    with pytest.raises(ValueError, match=r"fbank must be \[frames, 80\]"):
        emb.embedding_from_fbank(torch.zeros(10, 40))
    rank2 = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])], "rank2",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", 80])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["T", 192])], initializer=[numpy_helper.from_array(w, "W")])
    with pytest.raises(ValueError, match=r"rank2\.onnx: the speaker embedding \(CAM\+\+\)'s input 0 must be tensor\(float\) of rank 3"):
        OM.SpeakerEmbedding(_save(rank2, tmp_path / "rank2.onnx"))


# -- files and sessions -------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [OM.SpeechTokenizer, OM.SpeakerEmbedding])
def test_missing_or_corrupt_files_are_named(tmp_path, cls):
    with pytest.raises(FileNotFoundError, match=r"not found: .*absent\.onnx"):
        cls(tmp_path / "absent.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ValueError, match=r"junk\.onnx: not a loadable ONNX model"):
        cls(junk)
    truncated = tmp_path / "truncated.onnx"
    full = make_campplus(tmp_path / "full.onnx", *campplus_weights()).read_bytes()
    truncated.write_bytes(full[: len(full) // 2])
    with pytest.raises(ValueError, match=r"truncated\.onnx: not a loadable ONNX model"):
        cls(truncated)


def test_sessions_are_cpu_only_fully_optimised_with_capped_threads(tmp_path):
    import onnxruntime as ort

    emb = OM.SpeakerEmbedding(make_campplus(tmp_path / "c.onnx", *campplus_weights()))
    assert emb.session.get_providers() == ["CPUExecutionProvider"]
    opts = emb.session.get_session_options()
    assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert opts.intra_op_num_threads == OM.default_threads() <= 4
    one = OM.SpeakerEmbedding(tmp_path / "c.onnx", threads=1)
    assert one.session.get_session_options().intra_op_num_threads == 1
    feat = torch.randn(300, 80, generator=torch.Generator().manual_seed(0))
    assert torch.equal(one.embedding_from_fbank(feat), emb.embedding_from_fbank(feat))
