"""The TorchInductor options every ``torch.compile`` of this project passes (``learner.compile``).

**Mix-order reductions are off.** From torch 2.10, Inductor on CUDA fuses the reductions of a
backward whose loops run in different orders (a norm's per-row statistics and its per-column
weight and bias gradients) into one "mix-order" kernel. On torch 2.10 to 2.13 that kernel has
known faults on exactly this project's pattern, ``layer_norm(x) * weight + bias`` with
``(copies, 1, d)`` parameters over a large batch:

- the compiled backward returns a ``(d,)`` gradient for a ``(1, 1, d)`` parameter, and autograd
  stops with "CompiledFunctionBackward returned an invalid gradient" (pytorch/pytorch#178080;
  measured here on an H100 with torch 2.11 at the ``arc`` preset's batch sizes);
- scale and shift gradients can be silently wrong when the fused output is a view into a shared
  buffer (pytorch/pytorch#193061), or corrupted for a bias broadcast over a convolution's output
  (pytorch/pytorch#190796).

A wrong gradient is worse than a slow one, so the option is off for every compiled module. The
CPU backend never makes these kernels; torch releases without the option get no options.

**CUDA graphs** (``learner.cuda_graphs``) add ``triton.cudagraphs``: what ``mode="reduce-overhead"``
sets, which ``torch.compile`` does not take together with ``options``.
"""

from __future__ import annotations

import torch


def inductor_options(cuda_graphs: bool = False) -> dict[str, bool]:
    """The ``options`` argument of every ``torch.compile`` call (see the module docstring), with
    ``triton.cudagraphs`` where ``cuda_graphs``."""
    try:
        from torch._inductor import config
    except ImportError:  # a torch built without Inductor compiles nothing anyway
        return {}
    options = {"triton.mix_order_reduction": False} if hasattr(config.triton, "mix_order_reduction") else {}
    return options | ({"triton.cudagraphs": True} if cuda_graphs else {})


def compile_module(module: torch.nn.Module, cuda_graphs: bool = False) -> None:
    """``module.compile()`` in place with :func:`inductor_options` (automatic dynamic shapes)."""
    module.compile(options=inductor_options(cuda_graphs))


def compile_function(fn, cuda_graphs: bool = False):
    """``torch.compile(fn)`` with :func:`inductor_options`."""
    return torch.compile(fn, options=inductor_options(cuda_graphs))
