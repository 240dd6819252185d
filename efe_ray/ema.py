"""An exponential moving average (EMA) of a learner's weights, kept on their device.

With ``learner.ema_decay = d > 0`` the learner keeps an fp32 shadow copy of every parameter of the
agent and the prompt encoder and, after each optimizer step,

    ema = d * ema + (1 - d) * weights

in one ``torch._foreach_lerp_`` over all of them (no read back to the host). A step the device
skipped (non-finite loss or gradients: the step's 0-d ``skipped`` flag) blends with weight
``(1 - d) * (1 - skipped)`` = 0, so it leaves the average exactly as it was. (A non-finite weight
would still reach it, but no step that is not skipped writes one.)

The average is what is evaluated: held-out scoring during training swaps it into the modules for
the duration of the evaluation (:meth:`EMA.swapped`), ``evaluate`` copies it into the learner it
loads (:meth:`EMA.copy_to`), and ``export`` writes it in place of the training weights
(efe_ray/checkpoint.py, :func:`~efe_ray.checkpoint.evaluation_weights`). Its state is
``{module: {parameter name: tensor}}``, names as in the modules' state dicts, so that it overlays
them. Buffers are not averaged. No Ray here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn as nn

__all__ = ["EMA"]


class EMA:
    """fp32 shadow copies of the parameters of named modules, moved toward them after each step."""

    def __init__(self, modules: dict[str, nn.Module], decay: float) -> None:
        """``modules``: name -> module (``{"agent": ..., "prompt": ...}``); ``decay`` in [0, 1)."""
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay!r}")
        self.decay = decay
        self.params: list[nn.Parameter] = []
        self.shadow: list[torch.Tensor] = []
        self.names: dict[str, dict[str, int]] = {}  # module -> parameter name -> index (shared ones once)
        index: dict[int, int] = {}
        for module_name, module in modules.items():
            self.names[module_name] = {}
            for name, p in module.named_parameters(remove_duplicate=False):
                if id(p) not in index:
                    index[id(p)] = len(self.params)
                    self.params.append(p)
                    self.shadow.append(p.detach().float().clone())
                self.names[module_name][name] = index[id(p)]

    @torch.no_grad()
    def update(self, skipped: torch.Tensor | None = None) -> None:
        """``ema += (1 - decay) * (weights - ema)``; ``skipped`` (0-d bool, on the device): a step
        that did not happen, which leaves the average as it is. Nothing is read back."""
        if skipped is None:
            torch._foreach_lerp_(self.shadow, self.params, 1.0 - self.decay)
            return
        weight = (1.0 - skipped.float()) * (1.0 - self.decay)  # 0-d, on the device
        torch._foreach_lerp_(self.shadow, self.params, [weight] * len(self.shadow))

    @torch.no_grad()
    def reset(self) -> None:
        """Make the average the current weights (a learner whose weights were loaded without one)."""
        torch._foreach_copy_(self.shadow, [p.detach() for p in self.params])

    @torch.no_grad()
    def copy_to(self) -> None:
        """Overwrite the modules' weights with the average (for a learner that only evaluates)."""
        torch._foreach_copy_([p.detach() for p in self.params], self.shadow)

    @contextlib.contextmanager
    def swapped(self) -> Iterator[None]:
        """The average in the modules for the block, the training weights back after it (exactly;
        also after an exception). The block must not step: its weights are the average's."""
        self._swap()
        try:
            yield
        finally:
            self._swap()

    @torch.no_grad()
    def _swap(self) -> None:
        """Exchange weights and average in place, one tensor at a time (one tensor's worth of extra
        memory; the modules' parameters stay the same objects, so optimizers and compiled graphs
        keep them)."""
        for p, s in zip(self.params, self.shadow):
            kept = p.detach().clone()
            p.detach().copy_(s)
            s.copy_(kept)

    def state_dict(self) -> dict[str, dict[str, torch.Tensor]]:
        """``{module: {parameter name: average}}`` (plain tensors: weights-only loadable)."""
        return {m: {name: self.shadow[i] for name, i in names.items()} for m, names in self.names.items()}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, dict[str, torch.Tensor]]) -> None:
        """Restore :meth:`state_dict`: the same modules and parameter names, strictly."""
        if set(state) != set(self.names):
            raise KeyError(f"EMA state holds modules {sorted(state)}, expected {sorted(self.names)}")
        for m, names in self.names.items():
            if set(state[m]) != set(names):
                missing, extra = sorted(set(names) - set(state[m])), sorted(set(state[m]) - set(names))
                raise KeyError(f"EMA state of {m!r}: missing {missing[:5]}, unexpected {extra[:5]}")
            for name, i in names.items():
                self.shadow[i].copy_(state[m][name])
