"""Where tensors live: the one rule for choosing a torch device, and host-to-device uploads.

:func:`resolve_device` turns a device setting (``env.device``, ``evaluate --device``) into a
``torch.device``:

- an explicit value (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...) is obeyed, and refused with an
  error naming the setting when torch cannot parse it or this process has no such CUDA device;
- ``"auto"`` inside a Ray worker (the caller passes the GPU ids Ray assigned it) means
  ``cuda:0`` when Ray assigned a GPU and the CPU otherwise: Ray does not hide the GPUs from a
  worker that asked for none, so CUDA being visible is no permission to use it; Ray's
  ``CUDA_VISIBLE_DEVICES`` maps the assigned GPU to index 0;
- ``"auto"`` outside Ray (``gpu_ids=None``) means CUDA when this process sees one, else the CPU.

Nothing here imports Ray: the callers that run under Ray ask it for the GPU ids.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def resolve_device(setting: str, gpu_ids: Sequence | None = None, *, field: str = "device") -> torch.device:
    """The torch device for ``setting`` (see the module docstring).

    ``gpu_ids``: the GPU ids Ray assigned this worker, or ``None`` when not in a Ray worker.
    ``field`` names the setting in errors (e.g. ``"env.device"``).
    """
    if setting == "auto":
        if gpu_ids is not None:
            return torch.device("cuda:0" if gpu_ids and torch.cuda.is_available() else "cpu")
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(setting)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"{field}={setting!r} is not a device: use 'auto', 'cpu', 'cuda' or 'cuda:N' "
                         f"({err})") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            raise ValueError(f"{field}={setting!r}, but this process sees {count} CUDA device(s); "
                             "use 'auto' or 'cpu'")
    return device


def upload(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A host array as a tensor on ``device``. On CUDA the copy goes through pinned memory and does
    not block the host: it queues behind the kernels already launched."""
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)
