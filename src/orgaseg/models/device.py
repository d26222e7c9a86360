"""The one rule that turns a device name into a torch device."""

from __future__ import annotations

import torch

from orgaseg.errors import OrgasegError

#: Device names accepted by :func:`resolve_device`.
DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str = "auto") -> torch.device:
    """The torch device named by ``device``.

    Parameters
    ----------
    device : {"auto", "cpu", "cuda"}
        ``"auto"`` picks CUDA when torch sees a CUDA device, else the CPU.

    Returns
    -------
    torch.device

    Raises
    ------
    OrgasegError
        For an unknown name, or ``"cuda"`` when torch sees no CUDA device
        (falling back to the CPU silently would make a run hours slower).

    Examples
    --------
    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if device not in DEVICES:
        raise OrgasegError(f"unknown torch device {device!r}; use auto, cpu or cuda")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise OrgasegError("device cuda was asked for, but torch sees no CUDA device; use cpu or auto")
    return torch.device(device)
