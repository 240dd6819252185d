"""FLOP counts and GPU peaks for the MFU that bench/learner_step.py prints."""

from __future__ import annotations

import torch

PEAK_TFLOPS = {  # dense, per GPU, from the vendors' datasheets (SXM parts)
    "H100": {"fp32": 66.9, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4},
    "H200": {"fp32": 66.9, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4},
}


def peak_tflops(device: torch.device, precision: str) -> float | None:
    """The card's dense peak for the compute dtype, or None where unknown (CPU)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, table in PEAK_TFLOPS.items():
        if key in name:
            return table[precision]
    return None


def train_flops_per_token(n_params: int, layers: int, width: int, seq: float) -> float:
    """Training FLOPs per token (forward + backward): 6·N + 12·L·T·d."""
    return 6.0 * n_params + 12.0 * layers * seq * width


def agent_train_flops(views: int, side: int, n_params: int, agent) -> float:
    """Training FLOPs of the grid agent (``agent``: its AgentConfig) on ``views`` views of one
    canvas side: ``side * side + 1`` tokens a view (the cells and the prompt token), once per
    refinement pass, each at :func:`train_flops_per_token`."""
    t = side * side + 1
    return views * t * agent.passes * train_flops_per_token(n_params, agent.num_layers, agent.d_model, t)
