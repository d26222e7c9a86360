"""Optimisation settings of a training preset (no torch here: the method table imports it)."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings of a preset.

    Attributes
    ----------
    batch_size : int
        Fields of view per step.
    lr, min_lr : float
        Peak and final learning rate.
    weight_decay : float
        AdamW weight decay.
    warmup_steps : int
        Linear warm-up length (at most a fifth of the schedule).
    steps : int
        Default schedule length.
    grad_clip : float
        Maximum gradient norm (0 disables clipping).
    betas : tuple of float
        AdamW betas.
    checkpoint_every : int
        Steps between checkpoints (one is always written at the end).
    amsgrad : bool
        AdamW's AMSGrad variant (Han et al.'s optimiser).
    """

    batch_size: int = 64
    lr: float = 1e-3
    min_lr: float = 1e-5
    weight_decay: float = 0.05
    warmup_steps: int = 200
    steps: int = 10_000
    grad_clip: float = 1.0
    betas: tuple[float, float] = (0.9, 0.95)
    checkpoint_every: int = 500
    amsgrad: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        values = dict(values)
        values["betas"] = tuple(values.get("betas", (0.9, 0.95)))
        return cls(**values)
