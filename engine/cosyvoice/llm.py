"""CosyVoice 2's text-speech language model (``Qwen2LM``), loading the published ``llm.pt`` unchanged.

The network is the reference's (``cosyvoice/llm/llm.py``): a transformers ``Qwen2ForCausalLM``
(built from the ``qwen2`` config, never ``from_pretrained``) under ``llm.model``, the two rows
``llm_embedding`` (sos, task id), ``speech_embedding`` (speech codes + eos / unused / fill) and
``llm_decoder`` (hidden -> speech vocabulary, with bias). Generation follows ``Qwen2LM.inference``:

    prefix = [sos, embed(prompt_text + text), task_id, speech_embedding(prompt_speech)]

then one KV-cached step per token, ``ras_sampling`` on the log-probabilities, eos masked for the
first ``min_len`` steps and decoding stopped at any extra token or after ``max_len`` tokens (both
``int(len(text) * ratio)``). Only the decoder's 6,564 outputs are computed per step; the reference
also evaluates Qwen's unused 151,936-way ``lm_head`` there.

Every token is yielded as soon as it is sampled (streaming); draws come from an explicit
``torch.Generator`` (see :mod:`.sampling`). Works with transformers 4.45+ and 5.x (the KV-cache
argument was renamed ``past_key_values`` -> ``cache``; a cache object passed in is updated in place
in both).
"""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import torch
from torch import nn

from .config import load_config
from .sampling import ras_sampling

# Keys of a Qwen2 config.json that describe the file rather than the network.
_CONFIG_ONLY_KEYS = ("torch_dtype", "dtype", "transformers_version", "architectures")


def qwen2_config(qwen2_cfg: Mapping[str, Any]):
    """A transformers ``Qwen2Config`` from the ``qwen2`` section (the BlankEN ``config.json``), with
    PyTorch's scaled-dot-product attention (what the reference gets from ``from_pretrained``)."""
    from transformers import Qwen2Config

    kwargs = {k: v for k, v in qwen2_cfg.items() if k not in _CONFIG_ONLY_KEYS and not k.startswith("_")}
    return Qwen2Config(attn_implementation="sdpa", **kwargs)


def _as_tokens(tokens: torch.Tensor | Sequence[int] | None, name: str, limit: int) -> torch.Tensor:
    """``[1, N]`` int64 tokens on the CPU, checked to lie in ``[0, limit)``; None means no tokens."""
    if tokens is None:
        return torch.zeros(1, 0, dtype=torch.long)
    t = torch.as_tensor(tokens)
    if t.ndim == 1:
        t = t[None]
    if t.ndim != 2 or t.shape[0] != 1:
        raise ValueError(f"{name}: expected token ids of shape [1, N], got {list(t.shape)}")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"{name}: expected integer token ids, got {t.dtype}")
    t = t.to("cpu", torch.long)
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= limit):
        raise ValueError(f"{name}: token ids must lie in [0, {limit}); got min {int(t.min())}, max {int(t.max())}")
    return t


class Qwen2Encoder(nn.Module):
    """The Qwen2 body; ``model`` is transformers' ``Qwen2ForCausalLM`` (keys ``model.*``, ``lm_head.*``)."""

    def __init__(self, qwen2_cfg: Mapping[str, Any]):
        super().__init__()
        from transformers import Qwen2ForCausalLM

        self.model = Qwen2ForCausalLM(qwen2_config(qwen2_cfg))
        params = inspect.signature(type(self.model.model).forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"

    @staticmethod
    def new_cache():
        """An empty KV cache; the model appends to it in place on every call."""
        from transformers import DynamicCache

        return DynamicCache()

    def forward_one_step(self, embeds: torch.Tensor, cache) -> torch.Tensor:
        """Final-norm hidden states ``[1, T, D]`` for ``embeds`` ``[1, T, D]`` after what ``cache``
        holds (causal attention over cache + new positions); ``cache`` grows by T positions."""
        out = self.model.model(inputs_embeds=embeds, use_cache=True, **{self._cache_kw: cache})
        return out.last_hidden_state

    def rebuild_rotary(self, device: torch.device | str) -> None:
        """Recreate the rotary embedding's ``inv_freq`` on ``device`` in float32 when it is missing (not in
        the file, so left on ``meta`` by a meta-device build) or was cast to a half type with the weights."""
        inner = self.model.model
        rot = getattr(inner, "rotary_emb", None)
        if rot is None:
            import transformers

            raise RuntimeError(f"transformers {transformers.__version__}: Qwen2Model has no model-level rotary "
                               "embedding; CosyVoice needs transformers 4.45 or newer")
        if any(b.is_meta or b.dtype != torch.float32 or b.device != torch.device(device) for b in rot.buffers()):
            with torch.device(device):
                inner.rotary_emb = type(rot)(inner.config)


class Qwen2LM(nn.Module):
    """CosyVoice 2's language model: text tokens (+ a voice prompt) in, speech tokens out."""

    def __init__(self, cfg_llm: Mapping[str, Any] | None = None, qwen2_cfg: Mapping[str, Any] | None = None):
        super().__init__()
        if cfg_llm is None or qwen2_cfg is None:
            full = load_config()
            cfg_llm = full["llm"] if cfg_llm is None else cfg_llm
            qwen2_cfg = full["qwen2"] if qwen2_cfg is None else qwen2_cfg
        self.cfg = dict(cfg_llm)
        self.llm_input_size = int(cfg_llm["llm_input_size"])
        self.llm_output_size = int(cfg_llm["llm_output_size"])
        self.speech_token_size = int(cfg_llm["speech_token_size"])
        n_extra = int(cfg_llm["n_extra_speech_tokens"])
        self.sos = int(cfg_llm["sos"])
        self.task_id = int(cfg_llm["task_id"])
        self.eos_token = self.speech_token_size + int(cfg_llm["eos_offset"])
        self.fill_token = self.speech_token_size + int(cfg_llm["fill_offset"])
        self.stop_token_ids = [self.speech_token_size + i for i in range(n_extra)]
        self.mix_ratio = [int(x) for x in cfg_llm["mix_ratio"]]
        self.text_vocab_size = int(qwen2_cfg["vocab_size"])
        # Attribute order = the published key order (llm_embedding, llm.model.*, llm_decoder, speech_embedding).
        self.llm_embedding = nn.Embedding(2, self.llm_input_size)
        self.llm = Qwen2Encoder(qwen2_cfg)
        self.llm_decoder = nn.Linear(self.llm_output_size, self.speech_token_size + n_extra)
        self.speech_embedding = nn.Embedding(self.speech_token_size + n_extra, self.llm_input_size)

    # ------------------------------------------------------------------ building blocks

    @property
    def device(self) -> torch.device:
        return self.llm_decoder.weight.device

    def tie_embeddings(self) -> None:
        """Share ``lm_head`` and ``embed_tokens`` as Qwen2's ``tie_word_embeddings`` says. The values kept are
        ``lm_head``'s: the reference's copying strict load writes that key last into the shared tensor."""
        qwen = self.llm.model
        if getattr(qwen.config, "tie_word_embeddings", False):
            qwen.model.embed_tokens.weight = qwen.lm_head.weight

    def embed_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.llm.model.model.embed_tokens(tokens.to(self.device))

    def _speech_rows(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.speech_embedding(tokens.to(self.device))

    def _check_inputs(self, text, prompt_text, prompt_speech) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return (_as_tokens(text, "text_tokens", self.text_vocab_size),
                _as_tokens(prompt_text, "prompt_text_tokens", self.text_vocab_size),
                _as_tokens(prompt_speech, "prompt_speech_tokens", self.speech_token_size))

    def build_prefix(self, text_tokens, prompt_text_tokens=None, prompt_speech_tokens=None) -> torch.Tensor:
        """``[1, L, D]``: sos, the embedded prompt text + text, task id, the embedded prompt speech tokens."""
        text, prompt_text, prompt_speech = self._check_inputs(text_tokens, prompt_text_tokens, prompt_speech_tokens)
        w = self.llm_embedding.weight
        parts = [w[self.sos].reshape(1, 1, -1), self.embed_text(torch.cat([prompt_text, text], dim=1)),
                 w[self.task_id].reshape(1, 1, -1), self._speech_rows(prompt_speech)]
        return torch.cat(parts, dim=1)

    def decode_scores(self, hidden: torch.Tensor) -> torch.Tensor:
        """Log-probabilities (float32) over the speech vocabulary for hidden states ``[..., D]``."""
        return self.llm_decoder(hidden).float().log_softmax(dim=-1)

    @torch.inference_mode()
    def logits_for_prefix(self, text_tokens, prompt_text_tokens=None, prompt_speech_tokens=None) -> torch.Tensor:
        """The decoder's logits (float32, before log-softmax) at every prefix position, ``[L, V]``; the
        last row is what the first sampled token is drawn from. For parity checks."""
        prefix = self.build_prefix(text_tokens, prompt_text_tokens, prompt_speech_tokens)
        hidden = self.llm.forward_one_step(prefix, self.llm.new_cache())
        return self.llm_decoder(hidden[0]).float()

    def sampling_ids(self, logp: torch.Tensor, decoded: Sequence[int], sampling: Mapping[str, Any],
                     ignore_eos: bool, generator: torch.Generator | None) -> int:
        """The reference's ``sampling_ids``: eos is impossible while ``ignore_eos``, then ``ras_sampling``."""
        scores = logp.detach().to("cpu", torch.float32).clone()
        if ignore_eos:
            scores[self.eos_token] = -float("inf")
        return ras_sampling(scores, decoded, top_p=float(sampling["top_p"]), top_k=int(sampling["top_k"]),
                            win_size=int(sampling["win_size"]), tau_r=float(sampling["tau_r"]), generator=generator)

    def _defaults(self, sampling, min_ratio, max_ratio) -> tuple[dict, float, float]:
        inf = load_config()["inference"]
        return (dict(self.cfg["sampling"] if sampling is None else sampling),
                float(inf["min_token_text_ratio"] if min_ratio is None else min_ratio),
                float(inf["max_token_text_ratio"] if max_ratio is None else max_ratio))

    # ------------------------------------------------------------------ generation

    @torch.inference_mode()
    def inference(self, text_tokens, prompt_text_tokens=None, prompt_speech_tokens=None, *,
                  generator: torch.Generator | None, sampling: Mapping[str, Any] | None = None,
                  min_ratio: float | None = None, max_ratio: float | None = None,
                  check_interrupt: Callable[[], None] | None = None) -> Iterator[int]:
        """Speech tokens for ``text_tokens`` (``[1, N]``) in the voice of the prompt, one at a time as
        sampled. ``generator`` (a CPU ``torch.Generator``; None = torch's global one, as the reference)
        makes the tokens reproducible. ``sampling``/ratios default to ``cosyvoice2.json``. At most
        ``int(N * max_ratio)`` tokens; eos is not allowed before ``int(N * min_ratio)``."""
        sampling, min_ratio, max_ratio = self._defaults(sampling, min_ratio, max_ratio)
        text, _, _ = self._check_inputs(text_tokens, None, None)
        prefix = self.build_prefix(text_tokens, prompt_text_tokens, prompt_speech_tokens)
        min_len, max_len = int(text.shape[1] * min_ratio), int(text.shape[1] * max_ratio)
        yield from self._decode(prefix, min_len, max_len, sampling, generator, check_interrupt)

    def _decode(self, lm_input: torch.Tensor, min_len: int, max_len: int, sampling: Mapping[str, Any],
                generator: torch.Generator | None, check_interrupt: Callable[[], None] | None) -> Iterator[int]:
        cache = self.llm.new_cache()
        out: list[int] = []
        for i in range(max_len):
            if check_interrupt is not None:
                check_interrupt()
            hidden = self.llm.forward_one_step(lm_input, cache)
            logp = self.decode_scores(hidden[0, -1])
            token = self.sampling_ids(logp, out, sampling, i < min_len, generator)
            if token in self.stop_token_ids:
                break
            yield token
            out.append(token)
            lm_input = self.speech_embedding.weight[token].reshape(1, 1, -1)

    @torch.inference_mode()
    def inference_bistream(self, text_chunks: Iterable, prompt_text_tokens=None, prompt_speech_tokens=None, *,
                           generator: torch.Generator | None, sampling: Mapping[str, Any] | None = None,
                           max_ratio: float | None = None,
                           check_interrupt: Callable[[], None] | None = None) -> Iterator[int]:
        """Speech tokens while the text is still arriving (``text_chunks`` yields ``[1, n]`` token tensors),
        as the reference's ``inference_bistream``: text and speech are interleaved ``mix_ratio`` =
        [5, 15] (5 text tokens, then up to 15 speech tokens until the model emits the fill token); once
        the text ends, the remaining text and the task id are fed and decoding runs to eos. As in the
        reference there is no minimum length; unlike it (which has no bound), decoding also stops after
        ``int(text tokens * max_ratio)`` speech tokens, so a model that never says eos cannot loop forever."""
        sampling, _, max_ratio = self._defaults(sampling, None, max_ratio)
        n_fed = 0
        _, prompt_text, prompt_speech = self._check_inputs(None, prompt_text_tokens, prompt_speech_tokens)
        n_text, n_speech = self.mix_ratio
        w = self.llm_embedding.weight
        sos_emb, task_emb = w[self.sos].reshape(1, 1, -1), w[self.task_id].reshape(1, 1, -1)
        speech_emb = self._speech_rows(prompt_speech)
        lm_input = sos_emb
        out: list[int] = []
        cache = self.llm.new_cache()
        text_cache = self.embed_text(prompt_text)
        n_prompt = prompt_speech.shape[1]
        next_fill = (n_prompt // n_speech + 1) * n_speech - n_prompt

        def step(inp: torch.Tensor) -> torch.Tensor:
            if check_interrupt is not None:
                check_interrupt()
            return self.decode_scores(self.llm.forward_one_step(inp, cache)[0, -1])

        for chunk in text_chunks:
            chunk = _as_tokens(chunk, "text chunk", self.text_vocab_size)
            n_fed += chunk.shape[1]
            text_cache = torch.cat([text_cache, self.embed_text(chunk)], dim=1)
            # the prompt's speech tokens are interleaved with the first text tokens, 5 : 15
            while speech_emb.shape[1] > 0 and text_cache.shape[1] >= n_text:
                lm_input = torch.cat([lm_input, text_cache[:, :n_text], speech_emb[:, :n_speech]], dim=1)
                text_cache, speech_emb = text_cache[:, n_text:], speech_emb[:, n_speech:]
            if speech_emb.shape[1] > 0:
                continue
            after_fill = len(out) > 0 and out[-1] == self.fill_token
            if after_fill or (len(out) == 0 and lm_input.shape[1] == 1):
                if text_cache.shape[1] < n_text:
                    continue  # wait for more text
                lm_input = text_cache[:, :n_text] if after_fill else torch.cat([lm_input, text_cache[:, :n_text]], dim=1)
                text_cache = text_cache[:, n_text:]
            while True:
                logp = step(lm_input)
                if next_fill != -1 and len(out) == next_fill:
                    token = self.fill_token
                    next_fill += n_speech + 1
                else:
                    token = self.sampling_ids(logp, out, sampling, True, generator)
                if token == self.fill_token:
                    next_fill = len(out) + n_speech + 1
                out.append(token)
                if token >= self.speech_token_size:
                    if token == self.fill_token:
                        break
                    raise RuntimeError(f"bistream decoding produced the unexpected token {token}")
                yield token
                lm_input = self.speech_embedding.weight[token].reshape(1, 1, -1)

        lm_input = torch.cat([lm_input, text_cache, task_emb], dim=1)
        n_speech_out = sum(1 for t in out if t < self.speech_token_size)
        while n_speech_out < int(n_fed * max_ratio):
            logp = step(lm_input)
            token = self.sampling_ids(logp, out, sampling, False, generator)
            out.append(token)
            if token >= self.speech_token_size:
                if token == self.eos_token:
                    break
                raise RuntimeError(f"bistream decoding produced the unexpected token {token}")
            yield token
            n_speech_out += 1
            lm_input = self.speech_embedding.weight[token].reshape(1, 1, -1)


# ---------------------------------------------------------------------- weights


def load_llm_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of ``llm.pt`` (a flat ``{key: tensor}`` PyTorch zip; no code executed, memory-mapped,
    so a 2 GB file is not read into memory twice)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CosyVoice LLM weights not found: {path}")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # a legacy (non-zip) pickle cannot be memory-mapped
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same clear error
            raise ValueError(f"{path}: not a readable PyTorch weights file ({type(exc).__name__}: {exc})") from exc
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"{path}: not a readable PyTorch weights file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, dict) or not obj or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                       for k, v in obj.items()):
        raise ValueError(f"{path}: expected a flat state dict {{key: tensor}} (as the published llm.pt)")
    return obj


def check_llm_state(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Refuse a missing, unexpected or mis-shaped key; the error names ``source`` and the first such key."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    wrong = [(k, list(state[k].shape), list(v.shape)) for k, v in expected.items()
             if k in state and tuple(state[k].shape) != tuple(v.shape)]
    problems = []
    if missing:
        problems.append(f"missing key '{missing[0]}'" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    if extra:
        problems.append(f"unexpected key '{extra[0]}'" + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""))
    if wrong:
        k, got, want = wrong[0]
        problems.append(f"key '{k}' has shape {got} but {type(model).__name__} needs {want}"
                        + (f" (and {len(wrong) - 1} more mis-shaped)" if len(wrong) > 1 else ""))
    for k, v in state.items():
        if k in expected and not v.is_floating_point():
            problems.append(f"key '{k}' holds {v.dtype}, not floating-point weights")
            break
    if problems:
        raise ValueError(f"{source}: weights do not fit {type(model).__name__}: " + "; ".join(problems))


def build_llm_on_meta(cfg_llm: Mapping[str, Any] | None = None, qwen2_cfg: Mapping[str, Any] | None = None) -> Qwen2LM:
    """A ``Qwen2LM`` without storage (for layout checks and for loading by assignment).

    transformers is imported before the meta context: importing it imports torchaudio, whose Kaldi
    module makes a tensor at import time, and made under ``torch.device("meta")`` that tensor would
    have no data, breaking every later fbank (voice cloning) in the process."""
    from transformers import Qwen2ForCausalLM  # noqa: F401

    with torch.device("meta"):
        return Qwen2LM(cfg_llm, qwen2_cfg)


def load_llm(weights: str | Path | Mapping[str, torch.Tensor], cfg_llm: Mapping[str, Any] | None = None,
             qwen2_cfg: Mapping[str, Any] | None = None, *, device: torch.device | str = "cpu",
             dtype: torch.dtype = torch.float32, source: str | None = None) -> Qwen2LM:
    """``Qwen2LM`` with the weights of ``llm.pt`` (a path or its state dict), strictly checked, on
    ``device`` in ``dtype``. The network is built on ``meta`` and the file's tensors are assigned, so
    loading never holds two copies of the weights."""
    if isinstance(weights, (str, Path)):
        source = source or str(weights)
        state = load_llm_state_dict(weights)
    else:
        source = source or "llm state dict"
        state = dict(weights)
    model = build_llm_on_meta(cfg_llm, qwen2_cfg)
    check_llm_state(model, state, source)
    model.load_state_dict(state, strict=True, assign=True)
    model.tie_embeddings()
    model.llm.rebuild_rotary("cpu")
    leftovers = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if leftovers:
        raise ValueError(f"{source}: Qwen2LM has tensors the file does not set, e.g. '{leftovers[0]}'")
    model = model.to(device=device, dtype=dtype)
    model.tie_embeddings()
    model.llm.rebuild_rotary(device)
    return model.eval().requires_grad_(False)
