"""Where the torch models keep their tables: the device asked for, else CUDA when present, else the CPU."""

from __future__ import annotations

from typing import Any

__all__ = ["resolve_device"]


def resolve_device(device: str | None) -> Any:
    """``torch.device(device)``, or CUDA when ``device`` is ``None`` and a GPU is present, else the CPU.

    Examples
    --------
    >>> resolve_device("cpu").type
    'cpu'
    """
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
