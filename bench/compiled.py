"""How many graphs TorchDynamo has compiled: a benchmark whose timed window compiled one (a shape
the warm-up had not seen) measured compile time too, and says so."""

from __future__ import annotations

import torch


def compiled_graphs() -> int:
    """Graphs TorchDynamo has compiled in this process so far (a recompilation for a new shape counts)."""
    return int(torch._dynamo.utils.counters["stats"]["unique_graphs"])
