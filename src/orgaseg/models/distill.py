"""Self-distilled masked autoencoder with a discrete codebook (HiS4MAE), and its ablation.

A student (exactly MAESTER's :class:`~orgaseg.models.mae.MaskedAutoencoder`)
reconstructs masked patches; a teacher encoder of the same architecture is an
exponential moving average (EMA) of the student's encoder and sees the whole,
unmasked field of view. A codebook of ``k x D`` codes tracks the teacher's
tokens, and the student's visible tokens are pulled towards the codes of the
teacher tokens at the same positions:

- ``L_recon``: the MAE loss on masked patches;
- ``L_tea = MSE(Zq, stopgrad(Z_tea))``: moves each chosen code towards the
  teacher tokens that chose it (the codes' only gradient);
- ``L_stu = 1 - cos(Z_stu, stopgrad(Zq))``: on the student's visible tokens;
- loss ``L_recon + alpha L_tea + beta L_stu``.

Without a codebook (``codebook_size = 0``, the ``sdae-recon`` ablation) the
student is aligned to the teacher tokens directly:
``L_stu = 1 - cos(Z_stu, Z_tea)``.

Choices where the paper is vague (also in the README):

- Momentum of the teacher: cosine from ``momentum`` (0.996) at step 0 to 1.0
  at the last step of the schedule.
- The codebook starts as ``k`` teacher tokens drawn at random from the first
  batch (random codes far from the tokens would never be chosen); it is
  excluded from weight decay.
- An epoch is ``epoch_steps`` optimiser steps. At the end of each, a code
  chosen by fewer than ``isolated_share / k`` of the epoch's teacher tokens
  (a tenth of the uniform share by default) is isolated and moves to
  ``gamma Zq_sur + (1 - gamma) Zq_iso`` (``gamma = 0.8``), where ``Zq_sur``
  is drawn at random among the ``survivor_share`` (10%) most used codes.
- Inference uses the teacher encoder (the EMA, which the codebook tracks).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from orgaseg.errors import OrgasegError
from orgaseg.models.mae import MAEConfig, MaskedAutoencoder
from orgaseg.models.vit import ViTEncoder


@dataclass(frozen=True)
class DistillConfig:
    """Self-distillation settings of a :class:`DistilledMAE`.

    Attributes
    ----------
    codebook_size : int
        Number of codes ``k`` (0: no codebook, the ``sdae-recon`` ablation).
    alpha, beta : float
        Weights of ``L_tea`` and ``L_stu``.
    momentum : float
        Teacher EMA momentum at step 0 (rises to 1.0 by a half cosine).
    epoch_steps : int
        Optimiser steps per epoch (isolated codes are revived after each).
    isolated_share : float
        A code is isolated when chosen by fewer than ``isolated_share / k``
        of an epoch's teacher tokens.
    survivor_share : float
        Share of the most used codes that isolated codes are pulled towards.
    gamma : float
        Pull of an isolated code towards its survivor.
    """

    codebook_size: int = 512
    alpha: float = 1e-3
    beta: float = 2.5e-4
    momentum: float = 0.996
    epoch_steps: int = 79
    isolated_share: float = 0.1
    survivor_share: float = 0.1
    gamma: float = 0.8

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value):
                raise OrgasegError(f"distillation config: {field.name} must be a finite number, got {value!r}")
        if self.codebook_size < 0 or self.codebook_size != int(self.codebook_size):
            raise OrgasegError(f"distillation config: codebook_size must be an integer >= 0, got {self.codebook_size}")
        if self.epoch_steps < 1 or self.epoch_steps != int(self.epoch_steps):
            raise OrgasegError(f"distillation config: epoch_steps must be an integer >= 1, got {self.epoch_steps}")
        object.__setattr__(self, "codebook_size", int(self.codebook_size))
        object.__setattr__(self, "epoch_steps", int(self.epoch_steps))
        for name in ("momentum", "isolated_share", "survivor_share", "gamma"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise OrgasegError(f"distillation config: {name} must be in [0, 1], got {getattr(self, name)}")
        if self.alpha < 0 or self.beta < 0:
            raise OrgasegError("distillation config: alpha and beta must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DistillConfig:
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise OrgasegError(f"distillation config: unknown field(s) {', '.join(unknown)}")
        return cls(**data)


def teacher_momentum(step: int, total: int, base: float) -> float:
    """EMA momentum after optimiser step ``step`` (0-based) of ``total``: ``base`` -> 1.0 by a half cosine."""
    progress = min(1.0, step / max(1, total - 1))
    return 1.0 - (1.0 - base) * 0.5 * (1.0 + math.cos(math.pi * progress))


class DistilledMAE(nn.Module):
    """Student MAE + EMA teacher encoder (+ codebook): HiS4MAE, or ``sdae-recon`` without codebook.

    Parameters
    ----------
    config : MAEConfig
        Architecture of the student (and of the teacher encoder).
    distill : DistillConfig
        Self-distillation settings.

    Notes
    -----
    Called as ``model(imgs, generator=g)`` it returns ``(loss, parts)`` where
    ``parts`` holds the detached terms (``recon``, ``tea``, ``stu``). The
    training loop calls :meth:`after_step` after each optimiser step (EMA
    update, end-of-epoch code revival).
    """

    def __init__(self, config: MAEConfig, distill: DistillConfig) -> None:
        super().__init__()
        self.config = config
        self.distill = distill
        self.student = MaskedAutoencoder(config)
        c = config
        self.teacher = ViTEncoder(c.img_size, c.patch_size, c.in_chans, c.embed_dim, c.depth, c.heads,
                                  c.mlp_ratio, c.pos_weight)
        self.teacher.load_state_dict(self.student.encoder.state_dict())
        self.teacher.requires_grad_(False)
        if distill.codebook_size:
            self.codebook = nn.Parameter(torch.zeros(distill.codebook_size, c.embed_dim))
            self.codebook.no_weight_decay = True  # read by the training loop's parameter groups
            self.register_buffer("codebook_ready", torch.zeros((), dtype=torch.bool))
            self.register_buffer("code_counts", torch.zeros(distill.codebook_size, dtype=torch.float64))
        else:
            self.codebook = None
        self.usage_log: list[dict[str, float]] = []

    @property
    def n_tokens(self) -> int:
        return self.student.n_tokens

    def n_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    # -- training ----------------------------------------------------------------

    def forward(self, imgs: torch.Tensor, generator: torch.Generator | None = None):
        """Loss of one batch of fields of view; see the class notes."""
        terms = self.losses(imgs, generator)
        loss = terms["recon"] + self.distill.alpha * terms["tea"] + self.distill.beta * terms["stu"]
        return loss, {name: float(value.detach()) for name, value in terms.items()}

    def losses(self, imgs: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """The three loss terms ``recon``, ``tea`` (0 without a codebook) and ``stu``, unweighted."""
        x = self.student.standardize(imgs)
        step = self.student.masked_step(x, generator=generator)
        with torch.no_grad():
            z_tea = self.teacher(x)  # (B, N, D), whole field of view
        index = step.ids_keep.unsqueeze(-1).expand(-1, -1, z_tea.shape[-1])
        if self.codebook is None:
            target = torch.gather(z_tea, 1, index)
            loss_tea = torch.zeros((), device=x.device)
        else:
            ids = self.assign_codes(z_tea, generator)
            loss_tea = self.code_loss(z_tea, ids)
            target = torch.gather(self.codebook.detach()[ids], 1, index)
        loss_stu = (1.0 - F.cosine_similarity(step.latent.float(), target.float(), dim=-1)).mean()
        return {"recon": step.loss, "tea": loss_tea, "stu": loss_stu}

    def nearest_codes(self, tokens: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code (Euclidean, in float32) for every token ``(..., D)``."""
        flat = tokens.detach().float().reshape(-1, tokens.shape[-1])
        codes = self.codebook.detach().float()
        distances = (codes * codes).sum(1) - 2.0 * flat @ codes.T  # |t|^2 does not change the argmin
        return distances.argmin(dim=1).reshape(tokens.shape[:-1])

    def assign_codes(self, z_tea: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Nearest code of every teacher token; counts their use while training (first call: initialise)."""
        if not bool(self.codebook_ready):
            self._initialise_codebook(z_tea, generator)
        ids = self.nearest_codes(z_tea)
        if self.training:
            self.code_counts += torch.bincount(ids.flatten(), minlength=self.codebook.shape[0]).to(self.code_counts)
        return ids

    def code_loss(self, z_tea: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """``L_tea = MSE(Zq, stopgrad(Z_tea))``, computed per code from the sums of its tokens.

        The same value as gathering ``Zq = codebook[ids]``, but the backward
        pass of a gather with repeated indices accumulates in a thread-dependent
        order on CPU, which made resumed runs drift from uninterrupted ones; a
        one-hot matrix product keeps the codebook's gradient deterministic.
        """
        tokens = z_tea.detach().float().reshape(-1, z_tea.shape[-1])
        flat_ids = ids.flatten()
        counts = torch.bincount(flat_ids, minlength=self.codebook.shape[0]).to(tokens.dtype)
        sums = F.one_hot(flat_ids, self.codebook.shape[0]).to(tokens.dtype).T @ tokens  # (k, D)
        codes = self.codebook.float()
        # sum over tokens of |c_id - z|^2 = sum over codes of n_c |c|^2 - 2 c . S_c, plus sum |z|^2
        squared = (counts * (codes * codes).sum(1)).sum() - 2.0 * (codes * sums).sum() + (tokens * tokens).sum()
        return squared / tokens.numel()

    @torch.no_grad()
    def _initialise_codebook(self, z_tea: torch.Tensor, generator: torch.Generator | None) -> None:
        flat = z_tea.detach().reshape(-1, z_tea.shape[-1])
        k = self.codebook.shape[0]
        device = generator.device if generator is not None else flat.device
        picks = torch.randperm(flat.shape[0], generator=generator, device=device)[:k].to(flat.device)
        if picks.numel() < k:  # fewer tokens than codes: draw with repetition
            picks = picks[torch.arange(k, device=flat.device) % picks.numel()]
        self.codebook.copy_(flat[picks].float())
        self.codebook_ready.fill_(True)

    @torch.no_grad()
    def after_step(self, step: int, total: int, seed: int = 0) -> None:
        """EMA update of the teacher; at the end of an epoch, revive isolated codes and log usage.

        Parameters
        ----------
        step : int
            The optimiser step just taken (0-based).
        total : int
            Steps in the schedule.
        seed : int
            The run's seed: the survivors drawn for the isolated codes come from ``(seed, step)``, so
            that another seed draws others and a resumed run draws the same ones.
        """
        momentum = teacher_momentum(step, total, self.distill.momentum)
        for teacher, student in zip(self.teacher.parameters(), self.student.encoder.parameters()):
            teacher.mul_(momentum).add_(student.detach().to(teacher.dtype), alpha=1.0 - momentum)
        if self.codebook is not None and (step + 1) % self.distill.epoch_steps == 0:
            # mixed as the training loop mixes the masks' seed; seed 0 draws what runs before the seed reached here drew
            self.revive_isolated_codes(seed=int(seed) * 1_000_003 + step)

    @torch.no_grad()
    def revive_isolated_codes(self, seed: int = 0) -> dict[str, float]:
        """Pull rarely chosen codes towards popular ones; log and reset the epoch's usage counts.

        Returns
        -------
        dict
            ``perplexity`` (of the epoch's code usage), ``dead`` (codes never
            chosen), ``isolated`` (codes moved), ``tokens`` (counted).
        """
        counts = self.code_counts.clone()
        k = counts.numel()
        total = float(counts.sum())
        entry = {"perplexity": 0.0, "dead": int((counts == 0).sum()), "isolated": 0, "tokens": int(total)}
        if total > 0:
            share = counts / total
            nonzero = share[share > 0]
            entry["perplexity"] = float(torch.exp(-(nonzero * nonzero.log()).sum()))
            isolated = torch.nonzero(share < self.distill.isolated_share / k).flatten()
            n_survivors = max(1, math.ceil(self.distill.survivor_share * k))
            survivors = torch.argsort(counts, descending=True, stable=True)[:n_survivors]
            if isolated.numel():
                generator = torch.Generator().manual_seed(int(seed))
                drawn = survivors.cpu()[torch.randint(n_survivors, (isolated.numel(),), generator=generator)]
                drawn = drawn.to(self.codebook.device)
                gamma = self.distill.gamma
                self.codebook[isolated] = gamma * self.codebook[drawn] + (1.0 - gamma) * self.codebook[isolated]
            entry["isolated"] = int(isolated.numel())
        self.usage_log.append(entry)
        self.code_counts.zero_()
        return entry

    def progress_figures(self) -> dict[str, float]:
        """Figures for the training progress bar: the last epoch's code-usage perplexity and dead codes."""
        if not self.usage_log:
            return {}
        last = self.usage_log[-1]
        return {"perplexity": round(last["perplexity"], 1), "dead_codes": last["dead"]}

    def training_log(self) -> dict[str, Any]:
        """What the checkpoint records besides the weights: codebook usage per epoch."""
        return {"codebook_usage": list(self.usage_log)} if self.codebook is not None else {}

    # nn.Module extra state: the usage log travels with the state dict, so resume is exact
    def get_extra_state(self) -> dict:
        return {"usage_log": [dict(entry) for entry in self.usage_log]}

    def set_extra_state(self, state: dict) -> None:
        self.usage_log = [dict(entry) for entry in state.get("usage_log", [])]

    # -- inference ---------------------------------------------------------------

    def encode(self, imgs: torch.Tensor) -> torch.Tensor:
        """Teacher tokens of whole fields of view, ``(B, gh, gw, D)`` (see :meth:`MaskedAutoencoder.encode`)."""
        return self.student.encode_with(self.teacher, imgs)

    def reconstruct(self, imgs: torch.Tensor, mask_ratio: float, generator: torch.Generator | None = None):
        """The student's reconstructions (for inspection figures)."""
        return self.student.reconstruct(imgs, mask_ratio, generator)
