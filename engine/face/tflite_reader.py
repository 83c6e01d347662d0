"""A minimal reader for TensorFlow Lite flatbuffers (``.tflite``), with no TensorFlow.

Only what the pack needs to run MediaPipe's face models in PyTorch: the operator list of the
main subgraph, tensor shapes/types/names and constant buffers. Field ids follow the public
TFLite schema (``tensorflow/lite/schema/schema.fbs``):

* Model: 0 version, 1 operator_codes, 2 subgraphs, 3 description, 4 buffers
* OperatorCode: 0 deprecated_builtin_code (int8), 1 custom_code, 2 version, 3 builtin_code (int32)
* SubGraph: 0 tensors, 1 inputs, 2 outputs, 3 operators, 4 name
* Tensor: 0 shape, 1 type, 2 buffer, 3 name, 4 quantization
* Operator: 0 opcode_index, 1 inputs, 2 outputs, 3 builtin_options_type, 4 builtin_options
* Buffer: 0 data, 1 offset (uint64), 2 size (uint64) (large models keep data outside the flatbuffer)
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# BuiltinOperator codes used by the face models (schema enum values).
OPS = {
    0: "ADD", 1: "AVERAGE_POOL_2D", 2: "CONCATENATION", 3: "CONV_2D", 4: "DEPTHWISE_CONV_2D",
    6: "DEQUANTIZE", 9: "FULLY_CONNECTED", 14: "LOGISTIC", 17: "MAX_POOL_2D", 18: "MUL",
    19: "RELU", 21: "RELU6", 22: "RESHAPE", 23: "RESIZE_BILINEAR", 28: "TANH", 34: "PAD",
    39: "TRANSPOSE", 41: "SUB", 54: "PRELU", 60: "PADV2", 98: "LEAKY_RELU", 32: "CUSTOM",
}
# TensorType -> numpy dtype.
DTYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 6: np.bool_, 7: np.int16, 9: np.int8}


class TFLiteFormatError(ValueError):
    """The file is not a TFLite flatbuffer this reader understands."""


class _Table:
    """A flatbuffer table: field access by id through its vtable."""

    __slots__ = ("buf", "pos", "vt", "vt_len")

    def __init__(self, buf: bytes, pos: int):
        self.buf = buf
        self.pos = pos
        self.vt = pos - struct.unpack_from("<i", buf, pos)[0]
        self.vt_len = struct.unpack_from("<H", buf, self.vt)[0]

    def _off(self, fid: int) -> int:
        slot = 4 + 2 * fid
        if slot >= self.vt_len:
            return 0
        return struct.unpack_from("<H", self.buf, self.vt + slot)[0]

    def scalar(self, fid: int, fmt: str, default=0):
        o = self._off(fid)
        return default if o == 0 else struct.unpack_from("<" + fmt, self.buf, self.pos + o)[0]

    def _indirect(self, fid: int) -> int | None:
        o = self._off(fid)
        if o == 0:
            return None
        p = self.pos + o
        return p + struct.unpack_from("<I", self.buf, p)[0]

    def table(self, fid: int) -> "_Table | None":
        p = self._indirect(fid)
        return None if p is None else _Table(self.buf, p)

    def string(self, fid: int) -> str:
        p = self._indirect(fid)
        if p is None:
            return ""
        n = struct.unpack_from("<I", self.buf, p)[0]
        return self.buf[p + 4 : p + 4 + n].decode("utf-8", "replace")

    def vector(self, fid: int, dtype) -> np.ndarray:
        p = self._indirect(fid)
        if p is None:
            return np.zeros(0, dtype=dtype)
        n = struct.unpack_from("<I", self.buf, p)[0]
        return np.frombuffer(self.buf, dtype=np.dtype(dtype).newbyteorder("<"), count=n, offset=p + 4)

    def tables(self, fid: int) -> list["_Table"]:
        p = self._indirect(fid)
        if p is None:
            return []
        n = struct.unpack_from("<I", self.buf, p)[0]
        out = []
        for i in range(n):
            q = p + 4 + 4 * i
            out.append(_Table(self.buf, q + struct.unpack_from("<I", self.buf, q)[0]))
        return out


@dataclass
class TFTensor:
    """One tensor of the graph; ``data`` is set for constants (weights, shapes, paddings)."""

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: type
    data: np.ndarray | None = None


@dataclass
class TFOperator:
    """One operator: its builtin name, tensor indices and raw options table."""

    index: int
    op: str
    inputs: list[int]
    outputs: list[int]
    options: _Table | None = field(default=None, repr=False)

    def opt(self, fid: int, fmt: str = "i", default=0):
        """A scalar field of the builtin options (``default`` when absent)."""
        return default if self.options is None else self.options.scalar(fid, fmt, default)


@dataclass
class TFLiteModel:
    """The main subgraph of a ``.tflite`` file."""

    path: str
    tensors: list[TFTensor]
    operators: list[TFOperator]
    inputs: list[int]
    outputs: list[int]


def read_tflite(path: str | Path) -> TFLiteModel:
    """Parse ``path`` into tensors (constants decoded to numpy) and operators in execution order."""
    path = Path(path)
    try:
        buf = path.read_bytes()
    except OSError as exc:
        raise FileNotFoundError(f"cannot read TFLite model '{path}': {exc}") from exc
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise TFLiteFormatError(f"'{path}' is not a TFLite model (missing 'TFL3' identifier)")
    try:
        return _parse(buf, str(path))
    except (struct.error, IndexError, ValueError) as exc:
        if isinstance(exc, TFLiteFormatError):
            raise
        raise TFLiteFormatError(f"'{path}': corrupt or truncated TFLite flatbuffer ({exc})") from exc


def _parse(buf: bytes, name: str) -> TFLiteModel:
    model = _Table(buf, struct.unpack_from("<I", buf, 0)[0])
    codes = []
    for oc in model.tables(1):
        dep = oc.scalar(0, "b", 0)
        new = oc.scalar(3, "i", 0)
        code = max(int(dep), int(new))
        codes.append(OPS.get(code, f"BUILTIN_{code}") if code != 32 else "CUSTOM:" + oc.string(1))
    buffers = model.tables(4)
    subgraphs = model.tables(2)
    if not subgraphs:
        raise TFLiteFormatError(f"'{name}': no subgraph")
    sg = subgraphs[0]
    tensors = []
    for i, t in enumerate(sg.tables(0)):
        shape = tuple(int(s) for s in t.vector(0, np.int32))
        ttype = t.scalar(1, "b", 0)
        dtype = DTYPES.get(ttype)
        if dtype is None:
            raise TFLiteFormatError(f"'{name}': tensor {i} has unsupported type code {ttype}")
        data = None
        bidx = t.scalar(2, "I", 0)
        if bidx and bidx < len(buffers):
            b = buffers[bidx]
            raw = b.vector(0, np.uint8)
            if raw.size == 0 and b.scalar(1, "Q", 0) > 1:  # data stored after the flatbuffer
                off, size = b.scalar(1, "Q", 0), b.scalar(2, "Q", 0)
                raw = np.frombuffer(buf, np.uint8, count=size, offset=off)
            if raw.size:
                count = int(np.prod(shape)) if shape else 1
                arr = np.frombuffer(raw.tobytes(), dtype=np.dtype(dtype).newbyteorder("<"), count=count)
                data = arr.reshape(shape).astype(dtype)
        tensors.append(TFTensor(i, t.string(3), shape, dtype, data))
    ops = []
    for i, o in enumerate(sg.tables(3)):
        ci = o.scalar(0, "I", 0)
        if ci >= len(codes):
            raise TFLiteFormatError(f"'{name}': operator {i} refers to unknown opcode {ci}")
        ops.append(TFOperator(i, codes[ci], [int(x) for x in o.vector(1, np.int32)],
                              [int(x) for x in o.vector(2, np.int32)], o.table(4)))
    return TFLiteModel(name, tensors, ops, [int(x) for x in sg.vector(1, np.int32)],
                       [int(x) for x in sg.vector(2, np.int32)])
