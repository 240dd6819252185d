"""GridAgent: predicts the output grid, cell by cell, from the query input, a prompt and its view.

Output sizes may differ from the input's. Grids live on a square canvas of side ``S``
(``AgentConfig.canvas``, or a smaller side chosen per batch); cells beyond a grid hold the class
``OUTSIDE`` (10). The agent predicts one of 11 classes for every canvas cell, and the predicted
grid is read off the canvas by :func:`from_canvas`: its height is the number of leading rows whose
first cell is not ``OUTSIDE``, its width the number of leading columns whose first cell is not
``OUTSIDE``.

Architecture, per cell: a class embedding, four learned coordinate embeddings (row and column
counted from both ends of the input grid, so mirror-like moves are a match between two embeddings
rather than arithmetic on the grid size), a 3x3 convolution over the one-hot neighbourhood, the
projected prompt and the embedding of the view (the D8 transform the query was seen under). A
prompt token goes in front; a pre-norm transformer runs over all cells ``passes`` times (the same
weights, the input embedding added again before each further pass), and a linear head gives 11
logits per cell after every pass (the learner puts a loss on each: deep supervision).

**Copies.** Every parameter carries a leading dimension of ``copies`` independent models (one by
default). With ``M`` copies the agent maps ``(M, B, S, S)`` canvases to ``(M, B, S, S, 11)``
logits, each copy seeing only its own rows, in batched matrix products: test-time adaptation of
``M`` tasks at once trains ``M`` copies of one checkpoint in a single step. :meth:`GridAgent.stacked`
makes them; copy ``i`` computes exactly what the single agent with its weights computes.

A cell's logits depend on the canvas side: every canvas cell attends to every other, so the
``OUTSIDE`` cells a larger canvas adds change the context. Smaller canvases are valid, not equivalent.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from efe_ray.config import AgentConfig
from efe_ray.data.canvas import NUM_CLASSES, OUTSIDE, from_canvas, to_canvas  # noqa: F401  (the agent's canvas)

NUM_VIEWS = 8
"""The D8 transforms a query can be seen under (efe_ray/data/augment.py)."""


class Linear(nn.Module):
    """``copies`` independent affine maps: (M, N, in) -> (M, N, out)."""

    def __init__(self, copies: int, d_in: int, d_out: int):
        super().__init__()
        bound = 1 / math.sqrt(d_in)  # as nn.Linear's default initialisation
        self.weight = nn.Parameter(torch.empty(copies, d_in, d_out).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(copies, 1, d_out).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self.weight, self.bias
        if torch.is_autocast_enabled(x.device.type):  # baddbmm takes one dtype
            dtype = torch.get_autocast_dtype(x.device.type)
            x, w, b = x.to(dtype), w.to(dtype), b.to(dtype)
        return torch.baddbmm(b, x, w)


class LayerNorm(nn.Module):
    """``copies`` independent layer norms over the last dimension of (M, N, D)."""

    def __init__(self, copies: int, d: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(copies, 1, d))
        self.bias = nn.Parameter(torch.zeros(copies, 1, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:]) * self.weight + self.bias


class Block(nn.Module):
    """A pre-norm transformer block (attention over all T tokens of a view, GELU MLP)."""

    def __init__(self, copies: int, d: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.norm1, self.norm2 = LayerNorm(copies, d), LayerNorm(copies, d)
        self.qkv, self.out = Linear(copies, d, 3 * d), Linear(copies, d, d)
        self.up, self.down = Linear(copies, d, 4 * d), Linear(copies, 4 * d, d)

    def forward(self, x: torch.Tensor, b: int, t: int) -> torch.Tensor:
        """x: (M, B*T, D) -> (M, B*T, D)."""
        m, _, d = x.shape
        qkv = self.qkv(self.norm1(x)).view(m * b, t, 3, self.heads, d // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # 3 x (M*B, H, T, D/H)
        p = self.dropout if self.training else 0.0
        att = F.scaled_dot_product_attention(q, k, v, dropout_p=p).transpose(1, 2).reshape(m, b * t, d)
        x = x + F.dropout(self.out(att), p, self.training)
        return x + F.dropout(self.down(F.gelu(self.up(self.norm2(x)))), p, self.training)


class GridAgent(nn.Module):
    """(query canvas, prompt, view) -> per-cell class logits, for ``copies`` independent models."""

    def __init__(self, cfg: AgentConfig, prompt_dim: int, copies: int = 1):
        super().__init__()
        self.cfg, self.prompt_dim, self.copies = cfg, prompt_dim, copies
        m, d, s = copies, cfg.d_model, cfg.canvas
        # Embeddings N(0, 1), as nn.Embedding's: cell identity must not drown under the prompt.
        self.cell_emb = nn.Parameter(torch.randn(m, NUM_CLASSES, d))
        # Index s (= cfg.canvas) of the from-the-far-end coordinates means "beyond the input grid".
        self.coord_emb = nn.Parameter(torch.randn(4, m, s + 1, d))
        self.view_emb = nn.Parameter(torch.randn(m, NUM_VIEWS, d))
        self.stem = nn.Parameter(torch.randn(m * d, NUM_CLASSES, 3, 3) / math.sqrt(9 * NUM_CLASSES))
        self.prompt_in, self.prompt_token = Linear(m, prompt_dim, d), Linear(m, prompt_dim, d)
        self.blocks = nn.ModuleList(Block(m, d, cfg.num_heads, cfg.dropout) for _ in range(cfg.num_layers))
        self.norm, self.head = LayerNorm(m, d), Linear(m, d, NUM_CLASSES)

    def stacked(self, copies: int) -> GridAgent:
        """A new agent of ``copies`` copies of this one-copy agent's weights (same device)."""
        if self.copies != 1:
            raise ValueError(f"stacked() copies a one-copy agent; this one has {self.copies}")
        with torch.random.fork_rng(devices=[]):  # its initial weights are overwritten: leave the RNG be
            out = GridAgent(self.cfg, self.prompt_dim, copies).to(self.coord_emb.device)
        with torch.no_grad():
            for (name, mine), theirs in zip(self.named_parameters(), out.parameters()):
                if name == "coord_emb":
                    theirs.copy_(mine.expand(-1, copies, -1, -1))
                elif name == "stem":
                    theirs.copy_(mine.repeat(copies, 1, 1, 1))
                else:
                    theirs.copy_(mine.expand(copies, *mine.shape[1:]))
        return out

    def forward(self, canvas: torch.Tensor, prompt: torch.Tensor, view: torch.Tensor | None = None,
                *, all_passes: bool = False) -> torch.Tensor | list[torch.Tensor]:
        """canvas: (B, S, S) long in 0..10 (or (M, B, S, S) for M copies), S <= ``cfg.canvas``;
        prompt: (B, P) (or (M, B, P)); view: (B,) (or (M, B)) D8 index of each query, None for 0.

        Returns the last pass's logits (B, S, S, 11) (or (M, B, S, S, 11)); with ``all_passes``, the
        list of every pass's logits.
        """
        single = canvas.dim() == 3
        if single:
            canvas, prompt = canvas[None], prompt[None]
            view = None if view is None else view[None]
        m, b, s, _ = canvas.shape
        if m != self.copies:
            raise ValueError(f"got inputs for {m} copies, the agent has {self.copies}")
        if s > self.cfg.canvas:
            raise ValueError(f"a {s}x{s} canvas is larger than the agent's {self.cfg.canvas}x{self.cfg.canvas} (agent.canvas)")
        if view is None:
            view = torch.zeros((m, b), dtype=torch.long, device=canvas.device)
        x0 = self._embed(canvas, prompt, view)  # (M, B, 1+S*S, D)
        t = s * s + 1
        x0 = x0.reshape(m, b * t, -1)  # (M, B*T, D)
        z, outs = x0, []
        for i in range(self.cfg.passes):
            if i:
                z = z + x0
            for block in self.blocks:
                z = block(z, b, t)
            logits = self.head(self.norm(z)).view(m, b, t, NUM_CLASSES)[:, :, 1:]  # (M, B, S*S, 11)
            outs.append(logits.reshape(m, b, s, s, NUM_CLASSES))
        if single:
            outs = [o[0] for o in outs]
        return outs if all_passes else outs[-1]

    def _embed(self, canvas: torch.Tensor, prompt: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
        """(M, B, S, S) canvas, (M, B, P) prompt, (M, B) view -> (M, B, 1+S*S, D) input tokens.

        Every table lookup is a one-hot matrix product (:func:`lookup`): its backward is a matmul,
        not an index accumulation serialised on the few rows that every cell reads."""
        m, b, s, _ = canvas.shape
        d = self.cfg.d_model
        x = lookup(canvas, self.cell_emb).view(m, b, s, s, d) + self._coords(canvas)  # (M, B, S, S, D)
        # The 3x3 neighbourhood of a cell on the canvas's edge continues with OUTSIDE, as on a larger canvas.
        padded = F.pad(canvas, (1, 1, 1, 1), value=OUTSIDE)  # (M, B, S+2, S+2)
        onehot = F.one_hot(padded, NUM_CLASSES).to(x.dtype)  # (M, B, S+2, S+2, 11)
        onehot = onehot.permute(1, 0, 4, 2, 3).reshape(b, m * NUM_CLASSES, s + 2, s + 2)  # copies as conv groups
        stem = F.conv2d(onehot, self.stem.to(onehot.dtype), groups=m)  # (B, M*D, S, S)
        x = x + stem.view(b, m, d, s, s).permute(1, 0, 3, 4, 2).to(x.dtype)
        views = lookup(view, self.view_emb)  # (M, B, D)
        p = self.prompt_in(prompt).to(x.dtype) + views  # (M, B, D)
        x = x + p[:, :, None, None, :]
        token = (self.prompt_token(prompt).to(x.dtype) + views)[:, :, None, :]  # (M, B, 1, D)
        return torch.cat([token, x.reshape(m, b, s * s, d)], dim=2)

    def _coords(self, canvas: torch.Tensor) -> torch.Tensor:
        """Sum of the four coordinate embeddings of every cell: (M, B, S, S, D)."""
        m, b, s, _ = canvas.shape
        beyond = self.cfg.canvas  # the "beyond the input grid" index, whatever the batch's side
        inside = canvas != OUTSIDE  # (M, B, S, S)
        h = inside[..., 0].sum(-1)  # (M, B) input height
        w = inside[..., 0, :].sum(-1)  # (M, B) input width
        idx = torch.arange(s, device=canvas.device)
        row_back = torch.where(h[..., None] - 1 - idx < 0, beyond, h[..., None] - 1 - idx)  # (M, B, S)
        col_back = torch.where(w[..., None] - 1 - idx < 0, beyond, w[..., None] - 1 - idx)
        e_row, e_col, e_row_back, e_col_back = self.coord_emb  # (M, S+1, D) each
        e_row_back, e_col_back = lookup(row_back, e_row_back), lookup(col_back, e_col_back)  # (M, B, S, D)
        return (e_row[:, :s][:, None, :, None] + e_col[:, :s][:, None, None, :]
                + e_row_back[:, :, :, None] + e_col_back[:, :, None, :])


def lookup(index: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Rows of per-copy tables: (M, ...) long indices into (M, K, D) -> (M, ..., D), as
    ``table[copy, index]``, computed as a one-hot matrix product in the table's dtype (exact:
    each output sums one product with 1 and zeros), outside autocast."""
    m, k, d = table.shape
    with torch.autocast(index.device.type, enabled=False):
        onehot = F.one_hot(index.reshape(m, -1), k).to(table.dtype)  # (M, X, K)
        return torch.bmm(onehot, table).view(*index.shape, d)
