"""The one device rule (efe_ray/device.py): explicit settings obeyed or refused, "auto" by where it runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from efe_ray.device import resolve_device, upload


@pytest.fixture
def two_gpus(monkeypatch):
    """Pretend this process sees two CUDA devices."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_explicit_settings_are_obeyed(two_gpus):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("cuda:1", gpu_ids=[]) == torch.device("cuda:1")  # even where Ray assigned none
    assert resolve_device("cuda") == torch.device("cuda")


@pytest.mark.parametrize("setting, words", [("banana", "is not a device"), ("cuda:2", "sees 2 CUDA device(s)"),
                                            ("gpu", "is not a device")])
def test_invalid_settings_are_refused_by_name(two_gpus, setting, words):
    with pytest.raises(ValueError) as err:
        resolve_device(setting, field="env.device")
    assert f"env.device={setting!r}" in str(err.value) and words in str(err.value)


def test_cuda_without_cuda_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"device='cuda', but this process sees 0 CUDA device"):
        resolve_device("cuda")


def test_auto_in_a_ray_worker_uses_only_the_gpu_ray_assigned(two_gpus):
    assert resolve_device("auto", gpu_ids=[]) == torch.device("cpu")  # visible GPUs, none assigned
    assert resolve_device("auto", gpu_ids=[1]) == torch.device("cuda:0")  # Ray maps it to index 0


def test_auto_outside_ray_uses_cuda_when_present(two_gpus, monkeypatch):
    assert resolve_device("auto") == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("auto", gpu_ids=[0]) == torch.device("cpu")  # assigned, but torch has no CUDA


def test_upload_keeps_values_and_dtype():
    array = np.arange(6, dtype=np.int64).reshape(2, 3)[:, ::-1]  # not contiguous
    tensor = upload(array, torch.device("cpu"))
    assert tensor.dtype == torch.int64 and tensor.tolist() == array.tolist()
