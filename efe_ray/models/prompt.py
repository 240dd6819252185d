"""QwenHybridPrompt: a task's demonstrations and query input -> one prompt embedding.

Two encoders, fused:

- text: the serialised demonstrations + query input (efe_ray/data/serialize.py), read by a Qwen2
  body (transformers), masked mean-pooled over tokens, then ``Linear(hidden, prompt_dim)``;
- numbers: the 15 task features (efe_ray/data/features.py) through a small MLP.

``fuse`` combines them: ``mean`` (default), ``sum``, ``gate`` (a learned sigmoid mix) or
``concat`` (a linear layer over both). ``use_qwen=False`` gives the features-only prompt.

With ``task_embedding``, a learned vector per training task (a row of ``task_table``, looked up by
the task's id; zeros at first) is added to the fused prompt: what the encoders cannot tell about a
task from its demonstrations, training can still write there. A task the table does not know
(one never trained on) gets zeros. With ``versions`` V > 0 (``learner.colour_versions``) each task
has V rows, one per colour version: task ``i``'s version ``v`` is row ``i * V + v`` (so
``row // V == i``), and a lookup by id gives version 0, the identity colours.

The Qwen2 body is, by ``model_name``:

- ``"embedded"``: a small Qwen2 built from ``transformers.Qwen2Config`` with the grid tokenizer
  (efe_ray/data/serialize.py; random init, trained with the rest); needs no hub;
- a local folder or hub id: ``AutoModel`` / ``AutoTokenizer``;
- a local ``.gguf`` file: ``AutoModel.from_pretrained(folder, gguf_file=name)``.

Parameters are float32 whatever ``dtype`` says elsewhere: speed comes from autocast
(docs/design.md, invariant 3).
"""

from __future__ import annotations

import contextlib
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from efe_ray.config import PromptConfig
from efe_ray.data.device_views import CharIds
from efe_ray.data.serialize import CHARACTERS, grid_tokenizer
from efe_ray.device import upload
from efe_ray.models.inductor import compile_module


class ModelLoadError(RuntimeError):
    """A named checkpoint could not be loaded; the message says how to pass a local path."""


def load_qwen_body(cfg: PromptConfig) -> tuple[nn.Module, object]:
    """Return (Qwen2-style model, tokenizer) for ``cfg.model_name``.

    The embedded model and a loaded checkpoint leave here on one path: the tokenizer (the grid
    tokenizer or the checkpoint's) must encode every prompt character, pads on the right and
    truncates on the left, and the model's parameters are fp32.
    """
    if cfg.model_name == "embedded":
        model, tokenizer = _embedded_body(cfg)
    else:
        model, tokenizer = _checkpoint_body(cfg)
    if not _encodes_prompt_text(tokenizer):
        raise ModelLoadError(
            f"prompt.model_name={cfg.model_name!r}: its tokenizer drops or cannot encode some of the prompt "
            f"characters {''.join(CHARACTERS)!r}; use a checkpoint whose tokenizer covers them, or "
            "prompt.model_name=embedded."
        )
    model = model.float()  # parameters stay fp32 (docs/design.md, invariant 3)
    if getattr(tokenizer, "pad_token_id", None) is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.truncation_side = "left"  # keep the query, which sits at the end
    tokenizer.padding_side = "right"  # encode_text relies on it: see there
    return model, tokenizer


def _embedded_body(cfg: PromptConfig) -> tuple[nn.Module, object]:
    """A small random-init Qwen2 of ``cfg``'s shape with the grid tokenizer."""
    from transformers import Qwen2Config, Qwen2Model

    tokenizer = grid_tokenizer()
    qcfg = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_tokens + 2,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    qcfg._attn_implementation = cfg.attn_implementation
    return Qwen2Model(qcfg), tokenizer


def _checkpoint_body(cfg: PromptConfig) -> tuple[nn.Module, object]:
    """A checkpoint folder, hub id or ``.gguf`` file: ``AutoModel`` and its own tokenizer."""
    from transformers import AutoModel, AutoTokenizer

    if cfg.model_name.endswith(".gguf") and not os.path.isfile(cfg.model_name):
        raise ModelLoadError(f"prompt.model_name: GGUF file {cfg.model_name!r} does not exist")
    name, kwargs = model_location(cfg.model_name)
    kwargs["dtype"] = torch.float32
    try:
        model = AutoModel.from_pretrained(name, attn_implementation=cfg.attn_implementation, **kwargs)
        tok_kwargs = {"gguf_file": kwargs["gguf_file"]} if "gguf_file" in kwargs else {}
        tokenizer = AutoTokenizer.from_pretrained(name, **tok_kwargs)
        if not _encodes_prompt_text(tokenizer) and not tok_kwargs:
            # transformers 5 forces Qwen2Tokenizer on model_type "qwen2" whatever tokenizer.json
            # holds; a checkpoint with its own (e.g. character) tokenizer would lose every "\n".
            from transformers import PreTrainedTokenizerFast

            tokenizer = PreTrainedTokenizerFast.from_pretrained(name)
    except (OSError, ValueError, ImportError) as err:
        raise ModelLoadError(
            f"prompt.model_name={cfg.model_name!r} could not be loaded ({type(err).__name__}: {err}). "
            "No model hub is needed: download the checkpoint elsewhere and pass its local folder "
            "(with config.json and weights) or its .gguf file, e.g. "
            "--set prompt.model_name=/models/Qwen2.5-1.5B, or use prompt.model_name=embedded."
        ) from err
    return model, tokenizer


def model_location(model_name: str) -> tuple[str, dict]:
    """(folder or hub id, extra ``from_pretrained`` kwargs) for ``prompt.model_name``: a ``.gguf``
    file is read from its folder with ``gguf_file=<its name>``."""
    if model_name.endswith(".gguf"):
        folder, file = os.path.split(os.path.abspath(model_name))
        return folder, {"gguf_file": file}
    return model_name, {}


def _encodes_prompt_text(tokenizer) -> bool:
    """Whether every prompt character encodes to its own non-empty, non-unknown token ids."""
    unk = getattr(tokenizer, "unk_token_id", None)
    seen = set()
    for ch in CHARACTERS:
        ids = tuple(tokenizer(ch, add_special_tokens=False)["input_ids"])
        if not ids or unk in ids or ids in seen:
            return False
        seen.add(ids)
    return True


_PROBE = "I\n01\n23\nO\n4567\n|\nI\n8\nO\n9\n|\nQ\n0"
"""A prompt with every character and every pair of neighbours a prompt text can have."""


def _char_ids(tokenizer) -> CharIds | None:
    """The :class:`CharIds` of a character-level tokenizer (see :meth:`QwenHybridPrompt.char_ids`), else None."""
    ids = {ch: tokenizer(ch, add_special_tokens=False)["input_ids"] for ch in CHARACTERS}
    if any(len(v) != 1 for v in ids.values()):
        return None
    bos, eos, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
    if None in (bos, eos, pad):
        return None
    if tokenizer(_PROBE)["input_ids"] != [bos] + [ids[ch][0] for ch in _PROBE] + [eos]:
        return None
    return CharIds(digits=tuple(ids[str(d)][0] for d in range(10)), newline=ids["\n"][0], bar=ids["|"][0],
                   letters={ch: ids[ch][0] for ch in "IOQ"}, bos=bos, eos=eos, pad=pad)


def attends_causally(model: nn.Module) -> bool:
    """Whether every attention module of ``model`` declares causal attention, as decoder-only
    models such as Qwen2 do (``is_causal``); False where none declares it."""
    flags = [m.is_causal for m in model.modules() if isinstance(getattr(m, "is_causal", None), bool)]
    return bool(flags) and all(flags)


def sdpa_priority(first: str, device: torch.device):
    """A context in which SDPA on CUDA tries the ``first`` kernel before the others ("auto": no change).

    The backward pass uses the kernel its forward chose, so wrapping the forward is enough.
    """
    if first == "auto" or device.type != "cuda":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    order = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
             "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}
    backends = [order[first]] + [b for name, b in order.items() if name != first]
    return sdpa_kernel(backends, set_priority=True)


class QwenHybridPrompt(nn.Module):
    """(prompt texts, numeric features) -> (B, prompt_dim) prompt embeddings."""

    def __init__(self, cfg: PromptConfig, body: tuple[nn.Module, object] | None = None,
                 task_ids: tuple[str, ...] = (), versions: int = 0):
        """``body``: a prebuilt (Qwen2-style model, tokenizer) instead of :func:`load_qwen_body` (the
        tokenizer may be None for a model that only counts parameters, as efe_ray/memory.py's);
        ``task_ids``: the tasks of the task table (with ``cfg.task_embedding``); ``versions``: rows
        per task, one per colour version (``learner.colour_versions``; 0: one row per task)."""
        super().__init__()
        if cfg.dtype != "float32":
            raise ValueError(f"prompt.dtype must be float32 (got {cfg.dtype!r}); use learner.precision for speed")
        self.cfg = cfg
        d = cfg.prompt_dim
        self.numeric = nn.Sequential(nn.Linear(cfg.numeric_in_dim, d), nn.GELU(), nn.Linear(d, d))
        self.task_ids = tuple(task_ids) if cfg.task_embedding else ()
        self.task_index = {t: i for i, t in enumerate(self.task_ids)}
        if len(self.task_index) != len(self.task_ids):
            raise ValueError("task_ids must be distinct")
        if versions < 0:
            raise ValueError(f"versions: {versions} must be >= 0 (learner.colour_versions)")
        self.versions = versions if cfg.task_embedding else 0
        self.unknown_row = len(self.task_ids) * max(self.versions, 1)
        # Rows of the training tasks (V a task with versions), then one for any other task (never moved off zero).
        self.task_table = nn.Parameter(torch.zeros(self.unknown_row + 1, d)) if cfg.task_embedding else None
        self.qwen: nn.Module | None = None
        self.tokenizer = None
        if cfg.use_qwen:
            self.qwen, self.tokenizer = body if body is not None else load_qwen_body(cfg)
            specials = self.tokenizer.num_special_tokens_to_add() if self.tokenizer is not None else 0
            if cfg.max_tokens <= specials:  # the tokenizer would not truncate at all
                raise ValueError(f"prompt.max_tokens={cfg.max_tokens} leaves no room for text: the tokenizer "
                                 f"adds {specials} special token(s) to every prompt")
            self.causal = attends_causally(self.qwen)  # then a right-padded batch needs no mask
            self.text_proj = nn.Linear(self.qwen.config.hidden_size, d)
            if cfg.fuse == "gate":
                self.gate = nn.Linear(2 * d, d)
            elif cfg.fuse == "concat":
                self.concat = nn.Linear(2 * d, d)

    def compile_layers(self) -> None:
        """``torch.compile`` each Qwen decoder layer in place (``learner.compile``).

        Layer by layer, not the whole model: the layers share one compiled graph (parameters are
        graph inputs), and the model's Python around them (masks, pooling) stays eager.
        """
        for layer in self.qwen.layers if self.qwen is not None else ():
            compile_module(layer)

    # -- parameter groups -------------------------------------------------------------------
    def qwen_parameters(self) -> list[nn.Parameter]:
        """The Qwen body and its projection (the ``qwen_lr`` group)."""
        if self.qwen is None:
            return []
        return list(self.qwen.parameters()) + list(self.text_proj.parameters())

    def other_parameters(self) -> list[nn.Parameter]:
        """Feature MLP and fusion layers (the ``agent_lr`` group)."""
        qwen_ids = {id(p) for p in self.qwen_parameters()}
        return [p for p in self.parameters() if id(p) not in qwen_ids]

    # -- encoders ---------------------------------------------------------------------------
    def tokenize(self, texts: list[str], device: torch.device) -> dict[str, torch.Tensor]:
        """Texts -> {"input_ids": (B, T), "attention_mask": (B, T)} on ``device``: right-padded, at
        most ``max_tokens`` long (a longer text keeps its end, the query)."""
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.cfg.max_tokens,
                             return_tensors="np")  # numpy, then torch: a third faster than "pt" here
        return {k: upload(enc[k], device) for k in ("input_ids", "attention_mask")}  # pinned, non-blocking

    def char_ids(self) -> CharIds | None:
        """The token ids of the prompt characters when the tokenizer is character-level (each prompt
        character one id, framed by bos and eos: the grid tokenizer), so that token ids can be built
        from the grids on the device (efe_ray/data/device_views.py); None otherwise. Checked once, on
        a probe prompt that holds every character and every pair of neighbours a prompt can have."""
        if not hasattr(self, "_char_ids"):
            self._char_ids = _char_ids(self.tokenizer) if self.tokenizer is not None else None
        return self._char_ids

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Qwen embedding of each text: (B, prompt_dim), with gradient."""
        if self.qwen is None:
            raise RuntimeError("encode_text called with prompt.use_qwen=False")
        return self.encode_tokens(self.tokenize(texts, self.text_proj.weight.device))

    def encode_tokens(self, enc: dict[str, torch.Tensor]) -> torch.Tensor:
        """Qwen embedding of tokenized prompts ({"input_ids", "attention_mask"}: (B, T) long, right-padded):
        (B, prompt_dim), with gradient."""
        if self.qwen is None:
            raise RuntimeError("encode_tokens called with prompt.use_qwen=False")
        device = self.text_proj.weight.device
        # No padding mask for a causal model: padding is on the right, so no real token ever
        # attends to a pad, and pads are left out of the pooling below. Without a mask, SDPA can use
        # its fused (flash / cuDNN) kernels for a batch too, and transformers has no mask to inspect
        # on the host. No KV cache: nothing is generated, and filling one copies every layer's keys
        # and values.
        attention_mask = self._no_masks() if self.causal else enc["attention_mask"]
        with sdpa_priority(self.cfg.sdpa_backend, device):
            hidden = self.qwen(input_ids=enc["input_ids"], attention_mask=attention_mask,
                               use_cache=False).last_hidden_state  # (B, T, H)
        real = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1): 1 on real tokens
        pooled = (hidden * real).sum(1) / real.sum(1).clamp_min(1.0)  # (B, H)
        return self.text_proj(pooled)  # (B, P)

    def _no_masks(self) -> dict | None:
        """What a causal body gets as ``attention_mask``: where every layer attends fully (no sliding
        window), the per-layer-type mapping transformers accepts, with no mask for any layer: the
        layers then run SDPA with ``is_causal``, as without a mask, but transformers skips building
        masks, whose check for packed sequences reads a value back from the device on every forward.
        None (transformers builds them) for other bodies."""
        types = getattr(self.qwen.config, "layer_types", None)
        return {"full_attention": None} if types and set(types) == {"full_attention"} else None

    def task_rows(self, task_ids: list[str], device: torch.device) -> torch.Tensor:
        """(B,) long rows of ``task_table`` for ``task_ids``: each task's first row (with versions,
        version 0's: the identity colours); the last (zero) row for an unknown task."""
        step = max(self.versions, 1)
        rows = np.array([self.task_index[t] * step if t in self.task_index else self.unknown_row for t in task_ids],
                        dtype=np.int64)
        return upload(rows, device)

    def version_rows(self, rows: torch.Tensor, versions: torch.Tensor) -> torch.Tensor:
        """(B,) long rows of ``task_table`` of tasks' colour versions: ``rows * V + versions`` for the
        tasks' indices ``rows`` ((B,) long, an index past the training tasks an unknown task, whose
        row is past theirs too) and ``versions`` ((B,) long, each below V); ``rows`` as they are
        without versions."""
        return rows * self.versions + versions if self.versions else rows

    def task_vectors(self, task_ids: list[str] | torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
        """(B, P) task embeddings of ``task_ids`` (zeros for unknown tasks), or None without a table.
        ``task_ids``: ids, or (B,) long rows of the table (a row past the training tasks' is unknown)."""
        if self.task_table is None or task_ids is None:
            return None
        rows = task_ids if isinstance(task_ids, torch.Tensor) else self.task_rows(task_ids, device)
        known = rows < self.unknown_row  # the unknown rows never move off zero
        rows = rows.clamp_max(self.unknown_row)
        return F.embedding(rows, self.task_table) * known.unsqueeze(-1)  # backward: a sorted reduction

    def fuse(self, text_emb: torch.Tensor | None, features: torch.Tensor,
             task_ids: list[str] | torch.Tensor | None = None) -> torch.Tensor:
        """Fuse a text embedding (B, P) (or None) with features (B, F), plus the task embeddings of
        ``task_ids`` (B ids, or (B,) rows of the task table) when the prompt has a task table.
        Returns (B, P)."""
        num = self.numeric(features)  # (B, P)
        tasks = self.task_vectors(task_ids, features.device)  # (B, P) or None
        out = num if text_emb is None else self._mix(text_emb.to(num.dtype), num)
        return out if tasks is None else out + tasks.to(out.dtype)

    def _mix(self, text_emb: torch.Tensor, num: torch.Tensor) -> torch.Tensor:
        mode = self.cfg.fuse
        if mode == "mean":
            return 0.5 * (text_emb + num)
        if mode == "sum":
            return text_emb + num
        both = torch.cat([text_emb, num], dim=-1)  # (B, 2P)
        if mode == "gate":
            g = torch.sigmoid(self.gate(both))
            return g * text_emb + (1 - g) * num
        return self.concat(both)

    def forward(self, texts: list[str], features: torch.Tensor,
                text_emb: torch.Tensor | None = None) -> torch.Tensor:
        """Prompt embeddings (B, P). Pass ``text_emb`` (e.g. a cached, detached one) to skip Qwen."""
        if self.qwen is not None and text_emb is None:
            text_emb = self.encode_text(texts)
        return self.fuse(text_emb if self.qwen is not None else None, features)
