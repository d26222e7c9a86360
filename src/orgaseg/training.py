"""The self-supervised training loop shared by the learned methods.

Schedule: the learning rate rises linearly from 0 to ``lr`` over the warm-up
steps, then follows a half cosine down to ``min_lr`` at the last step. AdamW
with gradient clipping; mixed precision (bfloat16 autocast) on CUDA, full
precision with all CPU threads otherwise.

Budgets: ``steps`` fixes the schedule length; a ``minutes`` budget alone
measures the speed over the first steps (:data:`TIMING_STEPS`, or fewer when
they would not fit in the budget) and sets the schedule length to what fits
(capped by the preset's steps), so the cosine decay completes in time. A run
stopped while still timing has no schedule yet: its checkpoint keeps the
budget (``timing_budget_minutes``), and a resume times again
(:func:`resumed_schedule`).

Resuming is exact: batches and masks are drawn from streams seeded by
``(seed, step)`` (see :mod:`orgaseg.sampling`), and the checkpoint holds the
model, optimiser, step and schedule length, so a resumed run continues the
same loss curve.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import torch

from orgaseg.errors import Note, OrgasegError, OrgasegWarning, arg, in_words
from orgaseg.models.checkpoint import save_checkpoint
from orgaseg.models.device import resolve_device
from orgaseg.progress import ProgressCallback, report
from orgaseg.sampling import FieldOfViewBatches, FieldOfViewSampler
from orgaseg.train_config import TrainConfig

#: Steps timed before a minutes-only budget fixes the schedule length.
TIMING_STEPS = 20


class _StepBoundaryInterrupt:
    """Holds a Ctrl-C (SIGINT) or SIGTERM that arrives during a training step until the step is done.

    A step changes more than the weights: the optimiser's moments, the EMA teacher, and a model's
    buffers during its forward pass (HiS4MAE counts code use there). A checkpoint saved in the middle
    of a step holds part of it, which ``--resume`` then does again: a HiS4MAE run resumed after Ctrl-C
    drifted from the uninterrupted one. At the end of the step the signal's own handler runs (Ctrl-C:
    :class:`KeyboardInterrupt`; the command line's SIGTERM handler: its subclass). A second signal
    during the step runs it at once, unsaved (:attr:`in_step` says so). Only in the main thread, and
    only for signals handled in Python (one ignored, or left to the system, stays so).

    Attributes
    ----------
    in_step : bool
        Whether a step is under way (set by the training loop).
    pending : tuple or None
        The held signal's handler and number, run by :meth:`raise_pending`.
    """

    def __init__(self) -> None:
        self.in_step = False
        self.pending: tuple[Callable, int] | None = None
        self._handlers: dict[int, Callable] = {}

    @classmethod
    @contextlib.contextmanager
    def installed(cls) -> Iterator[_StepBoundaryInterrupt]:
        """One for a training loop, holding SIGINT and SIGTERM while the loop runs."""
        interrupt = cls()
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                handler = signal.getsignal(signum)
                if callable(handler):
                    interrupt._handlers[signum] = handler
                    signal.signal(signum, interrupt._hold)
        try:
            yield interrupt
        finally:
            for signum, handler in interrupt._handlers.items():
                signal.signal(signum, handler)

    def _hold(self, signum, frame) -> None:
        if self.pending is not None or not self.in_step:
            self._handlers[signum](signum, frame)
            return
        self.pending = (self._handlers[signum], signum)

    def raise_pending(self) -> None:
        """Run the handler of a signal held during the step that just ended (it raises), if any."""
        if self.pending is not None:
            handler, signum = self.pending
            handler(signum, None)


def learning_rate(step: int, total: int, config: TrainConfig) -> float:
    """Learning rate at ``step`` (0-based) of a ``total``-step schedule."""
    warmup = min(config.warmup_steps, max(1, total // 5))
    if step < warmup:
        return config.lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return config.min_lr + 0.5 * (config.lr - config.min_lr) * (1.0 + math.cos(math.pi * progress))


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with the preset's learning rate, betas, weight decay (not on biases and norms) and amsgrad."""
    return torch.optim.AdamW(_parameter_groups(model, config.weight_decay), lr=config.lr, betas=config.betas,
                             amsgrad=config.amsgrad)


def run_training(
    model: torch.nn.Module,
    sampler: FieldOfViewSampler,
    *,
    config: TrainConfig,
    output: str | Path,
    record: dict[str, Any],
    start_step: int = 0,
    total_steps: int | None = None,
    minutes: float | None = None,
    losses: list[float] | None = None,
    optimizer_state: dict | None = None,
    elapsed: float = 0.0,
    device: str = "auto",
    seed: int = 0,
    workers: int = 0,
    progress: ProgressCallback | None = None,
    loss_fn: Callable[[torch.nn.Module, torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    snapshots: int = 0,
) -> dict[str, Any]:
    """Train ``model`` on fields of view from ``sampler``; checkpoint to ``output``.

    Parameters
    ----------
    model : torch.nn.Module
        The model; ``loss_fn(model, batch, generator)`` (default: the first
        element of ``model(batch, generator=generator)``) gives the loss.
        A model with an ``after_step(step, total, seed)`` method has it called after
        each optimiser step (e.g. an EMA teacher update; ``seed`` is this run's,
        for the step's random draws); one with
        ``progress_figures()`` adds them to the progress bar, and one with
        ``training_log()`` adds it to the checkpoint.
    sampler : FieldOfViewSampler
        Source of batches.
    config : TrainConfig
        Optimisation settings.
    output : str or Path
        Checkpoint path (rewritten every ``checkpoint_every`` steps and at the end).
    record : dict
        Everything else the checkpoint must hold (method, model config,
        normalisations, provenance); training state is added to it.
    start_step, total_steps : int
        Where to start and the schedule length (``None``: ``config.steps``,
        or what fits in ``minutes``).
    minutes : float, optional
        Wall-clock budget for this call.
    losses : list of float, optional
        Loss history so far (resume).
    optimizer_state : dict, optional
        AdamW state to restore (resume).
    elapsed : float
        Training seconds spent before this call (resume).
    device : str
        ``auto``, ``cpu`` or ``cuda``.
    seed : int
        Seed of the batch and mask streams.
    workers : int
        Data-loader worker processes (0: sample in the training process).
    progress : callable, optional
        Progress callback; shows loss and fields of view per second.
    loss_fn : callable, optional
        See ``model``.
    snapshots : int
        Also keep ``N`` copies of the checkpoint, at ``1/N, 2/N, ..., N/N`` of
        the schedule, as ``<output stem>.step-<step>.pt`` beside ``output``
        (to score a model along its training).

    Returns
    -------
    dict
        The final checkpoint record.
    """
    device = resolve_device(device)
    model.to(device)
    model.train()
    optimizer = make_optimizer(model, config)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    losses = list(losses or [])
    total = total_steps or config.steps
    estimate = minutes is not None and total_steps is None
    loss_fn = loss_fn or (lambda m, batch, generator: m(batch, generator=generator)[0])
    after_step = getattr(model, "after_step", None)
    figures = getattr(model, "progress_figures", dict)
    training_log = getattr(model, "training_log", dict)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    generator = torch.Generator(device=device)

    def checkpoint(step: int) -> dict:
        state = {
            **record,
            # (a module's extra state, e.g. a usage log, is a plain value, not a tensor)
            "state_dict": {k: v.detach().cpu() if torch.is_tensor(v) else v for k, v in model.state_dict().items()},
            "optimizer": optimizer.state_dict(),
            "train_config": config.to_dict(),
            "step": step,
            "total_steps": total,
            # a minutes budget whose schedule the speed has not fixed yet: a resume times again
            "timing_budget_minutes": minutes if estimate else None,
            "losses": losses,
            "seed": seed,
            "train_seconds": round(elapsed + time.perf_counter() - started, 2),
            "device": str(device),
            "threads": torch.get_num_threads(),
            **training_log(),
        }
        save_checkpoint(output, state)
        if step in snapshot_steps():
            save_checkpoint(snapshot_path(output, step), state)
        return state

    def snapshot_steps() -> set[int]:
        return {round(total * i / snapshots) for i in range(1, snapshots + 1)} if snapshots > 0 else set()

    if snapshots > total:
        warnings.warn(OrgasegWarning(f"{snapshots} snapshots asked of a schedule of {total} steps: one per step, at "
                                     "most"), stacklevel=2)
    if start_step >= total:
        if total_steps is not None and total_steps < start_step:
            raise OrgasegError(f"the checkpoint is at step {start_step}, past the {total_steps} steps asked for: give "
                               f"{arg('steps')} above {start_step} to continue")
        raise OrgasegError(f"the checkpoint has already run its {total} steps; give more {arg('steps')} to continue")
    started = time.perf_counter()
    loader = torch.utils.data.DataLoader(
        FieldOfViewBatches(sampler, config.batch_size, start_step, total), batch_size=None, num_workers=workers
    )
    completed = start_step
    shown = total  # the schedule length the bar shows
    state = None
    with _StepBoundaryInterrupt.installed() as interrupt:
        try:
            for step, batch in loader:
                interrupt.in_step = True
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate(step, total, config)
                generator.manual_seed(seed * 1_000_003 + step)  # the masks of a step do not depend on history
                with autocast:
                    loss = loss_fn(model, batch.to(device, non_blocking=True), generator)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
                if after_step is not None:
                    after_step(step, total, seed)
                losses.append(float(loss.detach()))
                completed = step + 1
                interrupt.in_step = False
                interrupt.raise_pending()  # a Ctrl-C or SIGTERM held during the step
                spent = time.perf_counter() - started
                rate = (completed - start_step) * config.batch_size / max(spent, 1e-9)
                timed = completed - start_step
                if estimate:
                    # the budget's schedule at the speed so far: the bar counts towards it while the budget is
                    # timed (the preset's would show an end hours away for a run of minutes), and it becomes the
                    # schedule after TIMING_STEPS steps, or as soon as they would not fit in the budget
                    fits = start_step + int(timed / max(spent, 1e-9) * minutes * 60.0)
                    shown = max(completed + 1, min(config.steps, fits))
                    if timed == TIMING_STEPS or spent / timed * TIMING_STEPS > minutes * 60.0:
                        total, estimate = shown, False
                if completed % config.checkpoint_every == 0 or completed >= total or completed in snapshot_steps():
                    state = checkpoint(completed)
                report(progress, "training", completed, shown, loss=losses[-1], fovs_per_s=round(rate, 1), **figures())
                if completed >= total or (minutes is not None and spent >= minutes * 60.0):
                    break
        except KeyboardInterrupt as err:
            # Ctrl-C: keep what was trained; --resume continues from here
            of = f"about {shown} (the budget's schedule at the speed so far)" if estimate else total
            resume = in_words("resume=True", "--resume (resume=True)")
            if interrupt.in_step:  # a second signal in the middle of a step: the model holds part of it
                saved = state["step"] if state is not None else start_step
                if saved > 0:  # the command line prints the notes in its last line
                    err.add_note(Note(f"stopped during step {completed + 1}, unsaved; {output} holds step {saved} "
                                      f"of {of}; {resume} continues it"))
                raise
            if completed > start_step and (state is None or state["step"] != completed):
                checkpoint(completed)
            if completed > 0:  # the command line prints the notes in its last line
                err.add_note(Note(f"saved {output} at step {completed} of {of}; {resume} continues it"))
            raise
    if state is None or state["step"] != completed:
        state = checkpoint(completed)
    return state


def resumed_schedule(state: dict, steps: int | None, minutes: float | None) -> tuple[int | None, float | None]:
    """The schedule length and minutes budget of a resumed training (``total_steps``, ``minutes`` of
    :func:`run_training`).

    ``steps`` given wins. A checkpoint saved while a minutes budget was still timing its first steps has
    no schedule yet (its ``total_steps`` is the preset's): the resume times again, within ``minutes`` or,
    when none is given, what was left of that budget. Otherwise the schedule is the checkpoint's.
    """
    if steps is not None:
        return steps, minutes
    budget = state.get("timing_budget_minutes")
    if budget is None:
        return state.get("total_steps"), minutes
    if minutes is None:  # what is left of it; at least a second (the budget ran out in the interrupted step)
        minutes = max(budget - state.get("train_seconds", 0.0) / 60.0, 1 / 60)
    return None, minutes


def snapshot_path(output: str | Path, step: int) -> Path:
    """Where :func:`run_training` keeps the snapshot of ``output`` taken at ``step``."""
    output = Path(output)
    return output.with_name(f"{output.stem}.step-{step:07d}{output.suffix}")


def _parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on weight matrices only: biases, norms, tokens and codebooks are not shrunk."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            matrix = parameter.ndim >= 2 and parameter.shape[0] > 1
            exempt = getattr(parameter, "no_weight_decay", False)
            (decay if matrix and not exempt else no_decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
