"""Run a TFLite graph (read by :mod:`tflite_reader`) as a PyTorch module.

Why a generic interpreter rather than hand-written architectures: the three MediaPipe face
networks (short-range and full-range BlazeFace, FaceMesh) share a small op set, and executing
the file's own operator list guarantees that the PyTorch network is exactly the published one
(strides, paddings, channel-padding residuals, FPN upsampling) with no architecture to keep in
sync. Weights are converted once at construction (OHWI -> OIHW, fp16 DEQUANTIZE folded to
float) and stored as buffers, so ``.to(device, dtype)`` and batching work as usual. Activations
are indexed NCHW but stored channels_last (the NHWC input is only permuted, never copied),
and kernels are stored channels_last too, which keeps oneDNN/cuDNN from reordering memory at
every layer; graph outputs are returned in TFLite's NHWC layout.
"""
from __future__ import annotations

import math
import re
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .tflite_reader import TFLiteModel, TFOperator

_ACT = {0: None, 1: torch.relu, 3: lambda x: x.clamp(0, 6), 4: torch.tanh,
        2: lambda x: x.clamp(-1, 1)}


class UnsupportedOpError(NotImplementedError):
    """The graph uses an operator this interpreter does not implement."""


def _same_pad(size: int, k: int, s: int, d: int = 1) -> tuple[int, int]:
    """TensorFlow 'SAME' padding (before, after) for one spatial axis."""
    out = math.ceil(size / s)
    total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2


def _axis_nchw(axis: int, rank: int) -> int:
    """Map an NHWC axis to the internal NCHW axis (only 4-D tensors are permuted)."""
    axis = axis % rank
    return (0, 2, 3, 1)[axis] if rank == 4 else axis


class TFLiteGraph(torch.nn.Module):
    """The main subgraph of a TFLite model as a torch module (any batch size)."""

    def __init__(self, model: TFLiteModel):
        super().__init__()
        self.model_path = model.path
        t = model.tensors
        const: dict[int, np.ndarray] = {i: x.data for i, x in enumerate(t) if x.data is not None}
        self._steps: list[tuple[Callable, list, list[int]]] = []
        self._names: dict[int, str] = {}
        self.inputs = list(model.inputs)
        self.outputs = list(model.outputs)
        self.input_shapes = [t[i].shape for i in model.inputs]
        self.output_ranks = [len(t[i].shape) for i in model.outputs]
        for op in model.operators:
            if op.op == "DEQUANTIZE" and op.inputs[0] in const:
                const[op.outputs[0]] = const[op.inputs[0]].astype(np.float32)
                continue
            self._steps.append((self._build(op, t, const), op.inputs, op.outputs))

    # -- parameters --------------------------------------------------------------------------
    def _param(self, tensor_index: int, array: np.ndarray, tensors) -> str:
        """Register a converted constant as a buffer named after its TFLite tensor."""
        base = re.sub(r"[^0-9A-Za-z_]", "_", tensors[tensor_index].name) or f"t{tensor_index}"
        name = f"{base}_{tensor_index}"
        t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        if t.ndim == 4:  # activations are NHWC in memory (channels_last): keep kernels alike (~5x faster on CPU)
            t = t.contiguous(memory_format=torch.channels_last)
        self.register_buffer(name, t)
        return name

    def _build(self, op: TFOperator, t, const) -> Callable:
        kind = op.op
        if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            w = const.get(op.inputs[1])
            if w is None:
                raise UnsupportedOpError(f"{kind} op {op.index}: non-constant weights")
            b = const.get(op.inputs[2]) if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
            if kind == "CONV_2D":
                wt = w.transpose(0, 3, 1, 2)  # OHWI -> OIHW
                act_f, dil = 3, (op.opt(5, "i", 1), op.opt(4, "i", 1))
                groups = 0
            else:
                wt = w.transpose(3, 0, 1, 2)  # 1,H,W,C*m -> C*m,1,H,W
                act_f, dil = 4, (op.opt(6, "i", 1), op.opt(5, "i", 1))
                groups = -1
            wn = self._param(op.inputs[1], wt, t)
            bn = self._param(op.inputs[2], b, t) if b is not None else None
            stride = (op.opt(2, "i", 1), op.opt(1, "i", 1))
            same = op.opt(0, "b", 0) == 0
            act = _ACT.get(op.opt(act_f, "b", 0))
            k = wt.shape[2:]
            cin = t[op.inputs[0]].shape[-1]

            def conv(x, *_, wn=wn, bn=bn, stride=stride, same=same, act=act, k=k, dil=dil, groups=groups, cin=cin):
                w_ = getattr(self, wn)
                if same:
                    ph = _same_pad(x.shape[2], k[0], stride[0], dil[0])
                    pw = _same_pad(x.shape[3], k[1], stride[1], dil[1])
                    if ph[0] == ph[1] and pw[0] == pw[1]:
                        pad = (ph[0], pw[0])
                    else:
                        x, pad = F.pad(x, (pw[0], pw[1], ph[0], ph[1])), (0, 0)
                else:
                    pad = (0, 0)
                y = F.conv2d(x, w_, getattr(self, bn) if bn else None, stride, pad, dil,
                             cin if groups == -1 else 1)
                return act(y) if act else y

            return conv
        if kind in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
            stride = (op.opt(2, "i", 1), op.opt(1, "i", 1))
            k = (op.opt(4, "i", 1), op.opt(3, "i", 1))
            same = op.opt(0, "b", 0) == 0
            act = _ACT.get(op.opt(5, "b", 0))
            is_max = kind == "MAX_POOL_2D"

            def pool(x, *_, stride=stride, k=k, same=same, act=act, is_max=is_max):
                if same:
                    ph, pw = _same_pad(x.shape[2], k[0], stride[0]), _same_pad(x.shape[3], k[1], stride[1])
                    if ph != (0, 0) or pw != (0, 0):
                        if not is_max:
                            raise UnsupportedOpError("AVERAGE_POOL_2D with SAME padding")
                        x = F.pad(x, (pw[0], pw[1], ph[0], ph[1]), value=float("-inf"))
                y = F.max_pool2d(x, k, stride) if is_max else F.avg_pool2d(x, k, stride)
                return act(y) if act else y

            return pool
        if kind in ("ADD", "MUL", "SUB"):
            act = _ACT.get(op.opt(0, "b", 0))
            consts = {}
            for j, i in enumerate(op.inputs):
                if i in const:
                    a = const[i].astype(np.float32)
                    if a.ndim == 4:
                        a = a.transpose(0, 3, 1, 2)
                    elif a.ndim in (1, 3) and len(t[op.outputs[0]].shape) == 4:
                        a = a.reshape(-1, 1, 1) if a.ndim == 1 else a.transpose(2, 0, 1)
                    consts[j] = self._param(i, a, t)
            fn = {"ADD": torch.add, "MUL": torch.mul, "SUB": torch.sub}[kind]

            def binary(a, b, consts=consts, fn=fn, act=act):
                a = getattr(self, consts[0]) if 0 in consts else a
                b = getattr(self, consts[1]) if 1 in consts else b
                y = fn(a, b)
                return act(y) if act else y

            return binary
        if kind == "PRELU":
            a = const[op.inputs[1]].astype(np.float32)
            if a.size == a.shape[-1]:  # one slope per channel: torch's native PReLU
                an = self._param(op.inputs[1], a.reshape(-1), t)
                return lambda x, *_, an=an: F.prelu(x, getattr(self, an))
            an = self._param(op.inputs[1], a.transpose(2, 0, 1), t)
            return lambda x, *_, an=an: torch.where(x >= 0, x, x * getattr(self, an))
        if kind in ("RELU", "RELU6", "LOGISTIC", "TANH"):
            fn1 = {"RELU": torch.relu, "RELU6": lambda x: x.clamp(0, 6), "LOGISTIC": torch.sigmoid,
                   "TANH": torch.tanh}[kind]
            return lambda x, *_, fn1=fn1: fn1(x)
        if kind == "LEAKY_RELU":
            alpha = op.opt(0, "f", 0.2)
            return lambda x, *_, alpha=alpha: F.leaky_relu(x, alpha)
        if kind in ("PAD", "PADV2"):
            p = const[op.inputs[1]].astype(int)
            value = float(const[op.inputs[2]].reshape(-1)[0]) if kind == "PADV2" and len(op.inputs) > 2 else 0.0
            rank = len(t[op.inputs[0]].shape)
            if rank == 4:  # NHWC paddings -> F.pad order for NCHW (last axis first)
                order = [2, 1, 3, 0]  # W, H, C, N
            else:
                order = list(range(rank - 1, -1, -1))
            pads = [int(v) for ax in order for v in p[ax]]
            return lambda x, *_, pads=pads, value=value: F.pad(x, pads, value=value)
        if kind == "RESHAPE":
            out_shape = t[op.outputs[0]].shape
            in_rank = len(t[op.inputs[0]].shape)

            def reshape(x, *_, out_shape=out_shape, in_rank=in_rank):
                if in_rank == 4:
                    x = x.permute(0, 2, 3, 1)
                y = x.reshape(x.shape[0], *out_shape[1:])
                return y.permute(0, 3, 1, 2) if len(out_shape) == 4 else y

            return reshape
        if kind == "CONCATENATION":
            rank = len(t[op.outputs[0]].shape)
            axis = _axis_nchw(op.opt(0, "i", 0), rank)
            act = _ACT.get(op.opt(1, "b", 0))

            def concat(*xs, axis=axis, act=act):
                y = torch.cat(xs, dim=axis)
                return act(y) if act else y

            return concat
        if kind == "RESIZE_BILINEAR":
            size = tuple(int(v) for v in const[op.inputs[1]].reshape(-1))
            align, half = bool(op.opt(2, "b", 0)), bool(op.opt(3, "b", 0))
            return lambda x, *_, size=size, align=align, half=half: _resize_bilinear(x, size, align, half)
        raise UnsupportedOpError(f"operator {op.index} '{kind}' is not supported by the TFLite->torch interpreter")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``x``: NHWC float batch matching the model input; returns the graph outputs (NHWC)."""
        env: dict[int, torch.Tensor] = {self.inputs[0]: x.permute(0, 3, 1, 2)}
        for fn, ins, outs in self._steps:
            args = [env.get(i) for i in ins if i >= 0]
            env[outs[0]] = fn(*args)
        res = []
        for i, r in zip(self.outputs, self.output_ranks):
            y = env[i]
            res.append(y.permute(0, 2, 3, 1) if r == 4 else y)
        return res


def _resize_bilinear(x: torch.Tensor, size: tuple[int, int], align: bool, half: bool) -> torch.Tensor:
    """TFLite RESIZE_BILINEAR, including the legacy mode (no half-pixel centres, no align)."""
    if align or half:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=align)
    out = x
    for axis, (n_in, n_out) in ((2, (x.shape[2], size[0])), (3, (x.shape[3], size[1]))):
        src = torch.arange(n_out, device=x.device, dtype=torch.float32) * (n_in / n_out)
        i0 = src.floor().long().clamp(max=n_in - 1)
        i1 = (i0 + 1).clamp(max=n_in - 1)
        w = (src - i0.float()).to(x.dtype)
        shape = [1, 1, 1, 1]
        shape[axis] = n_out
        w = w.view(shape)
        out = out.index_select(axis, i0) * (1 - w) + out.index_select(axis, i1) * w
    return out
