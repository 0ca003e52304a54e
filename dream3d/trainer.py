"""The one training loop: text to 3D and the bundled prior's VAE and UNet all run through :class:`Trainer`.

A task (:class:`TrainingTask`: a system such as :class:`~dream3d.systems.dreamfusion.DreamFusion`,
or one stage of the prior's training) says what one step computes and which optimizers it has;
the trainer owns everything around that:

- **Randomness**: one seeded ``torch.Generator`` per run (or stage), passed to every step; its
  state is checkpointed, so a resumed run draws what an uninterrupted run draws.
- **The step**: zero the gradients, ``task.training_step(step, generator)`` -> loss and logs,
  backward, ``task.clip_gradients()``, every optimizer steps, every learning-rate scheduler steps,
  ``task.after_optimizer_step(step)`` (e.g. an EMA).
- **NaN guard**: a step whose loss or any gradient is not finite is skipped: no parameter and no
  optimizer moment changes (schedulers still advance, so learning rates follow the step count);
  it is reported and recorded, and ``max_skipped_steps`` skipped steps in a row stop the run
  with a one-line error.
- **Checkpoints** every ``checkpoint_every`` steps and at the end (atomic; ``torch.save``): the
  task's ``state_dict()`` (every part: geometry, renderer buffers such as the occupancy grid,
  guidance weights), every optimizer and scheduler, the generator, the step, the history and
  the time. :meth:`Trainer.load_checkpoint` continues to the same result as an uninterrupted run.
- **Ctrl-C**: the first SIGINT (or :meth:`Trainer.request_stop`, e.g. from a web app's cancel
  button) lets the running step finish, saves a checkpoint and raises :class:`Interrupted`; a
  second SIGINT stops at once without writing (the last checkpoint stays). A kill loses at most
  the steps since the last checkpoint, never a finished file.
- **Progress**: a tqdm bar with the running mean of the task's ``progress_keys`` over 20 steps;
  for a caller that shows progress elsewhere (a web page), ``callback(step, total, info)`` after
  every step (``info``: the step's logs, plus ``"val_image"``, the path, when a validation image
  was saved) and once more for the final validation image. ``stop``: a ``threading.Event`` the
  caller sets to stop the run as :meth:`Trainer.request_stop` does (one event can serve several
  trainers, e.g. the stages of a run).
- **Validation**: every ``val_every`` steps and after the last step, ``task.validation_image``
  is saved as ``val_dir/step-NNNNN.png``.
- **Stages** (:class:`StagedRun`): several stages in one command, each with its own checkpoint
  ``<checkpoint_dir>/<name>.pt``, each resumable; a finished stage is not run again on resume.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .errors import UserError
from .io import atomic_path, save_image

CHECKPOINT_FORMAT = 2  # 1: the per-command checkpoints of dream3d before the one trainer


class Interrupted(KeyboardInterrupt):
    """A run stopped on request (Ctrl-C or :meth:`Trainer.request_stop`) after a checkpoint."""


@dataclass
class StepOutput:
    """What one training step computed: the scalar ``loss`` to minimise and numbers (or short
    strings) to log."""

    loss: torch.Tensor
    logs: dict[str, Any]


class TrainingTask:
    """What :class:`Trainer` runs. Subclasses implement :meth:`training_step`, :meth:`optimizers`,
    ``state_dict`` and ``load_state_dict`` (``nn.Module`` subclasses have the last two); the other
    hooks are optional."""

    progress_keys: tuple[str, ...] = ("loss",)

    def training_step(self, step: int, generator: torch.Generator) -> StepOutput:
        raise NotImplementedError

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Every optimizer of the task by name (the same objects on every call)."""
        raise NotImplementedError

    def lr_schedulers(self) -> dict[str, torch.optim.lr_scheduler.LRScheduler]:
        return {}

    def clip_gradients(self) -> None:
        """Called after the gradients were checked finite, before the optimizers step."""

    def after_optimizer_step(self, step: int) -> None:
        """Called after the optimizers stepped (not after a skipped step)."""

    def validation_image(self, step: int) -> np.ndarray | None:
        """An (H, W, 3) uint8 picture of the task's state, or ``None``."""
        return None


class SingleModelTask(TrainingTask):
    """A task that trains one module (``model``) with one ``optimizer`` and one learning-rate
    ``scheduler``, all set by the subclass, under the name ``name`` in checkpoints."""

    name: str
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler

    def optimizers(self):
        return {self.name: self.optimizer}

    def lr_schedulers(self):
        return {self.name: self.scheduler}

    def state_dict(self) -> dict:
        return {self.name: self.model.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state[self.name])


class Trainer:
    """Runs ``task`` for ``steps`` steps (module docstring).

    ``checkpoint``: the file of this run's (or stage's) checkpoint (``None``: no checkpoints, for
    short trainings that are not worth resuming). ``meta``: facts that a checkpoint must match to
    be resumed here (e.g. the prompt and seed).
    """

    def __init__(
        self,
        task: TrainingTask,
        steps: int,
        checkpoint: str | Path | None,
        generator: torch.Generator,
        *,
        checkpoint_every: int = 0,
        val_every: int = 0,
        val_dir: str | Path | None = None,
        max_skipped_steps: int = 20,
        desc: str = "training",
        progress: bool = True,
        meta: dict | None = None,
        callback: Callable[[int, int, dict], None] | None = None,
        stop: threading.Event | None = None,
    ):
        if steps < 0:
            raise UserError(f"steps must be >= 0, got {steps}")
        self.task, self.steps, self.generator = task, steps, generator
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.checkpoint_every, self.val_every = checkpoint_every, val_every
        self.val_dir = Path(val_dir) if val_dir is not None else None
        self.max_skipped_steps, self.desc, self.progress = max_skipped_steps, desc, progress
        self.meta = dict(meta or {})
        self.optimizers = task.optimizers()
        self.schedulers = task.lr_schedulers()
        self.step = 0
        self.history: list[dict] = []
        self.skipped: list[int] = []
        self.seconds = 0.0
        self.callback = callback
        self._stop = stop if stop is not None else threading.Event()

    # ---------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "task": self.task.state_dict(),
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "generator": self.generator.get_state(),
            "history": self.history,
            "skipped": self.skipped,
            "seconds": self.seconds,
            "meta": self.meta,
        }

    def save_checkpoint(self) -> None:
        if self.checkpoint is None:
            return
        with atomic_path(self.checkpoint) as tmp:
            torch.save(self.state_dict(), tmp)

    def load_checkpoint(self) -> None:
        """Continue from :attr:`checkpoint` (it must exist and match :attr:`meta`)."""
        if self.checkpoint is None or not self.checkpoint.is_file():
            raise UserError(f"no checkpoint to resume at '{self.checkpoint}'; run without --resume to start")
        state = torch.load(self.checkpoint, map_location="cpu", weights_only=False)
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise UserError(
                f"'{self.checkpoint}' was written by an older dream3d and cannot be resumed; "
                f"start the run again in another folder"
            )
        differ = [k for k in self.meta if state["meta"].get(k) != self.meta[k]]
        if differ:
            was = ", ".join(f"{k} {state['meta'].get(k)!r}" for k in differ)
            raise UserError(
                f"the checkpoint '{self.checkpoint}' is for {was}; use the same settings to resume, "
                f"or another output folder"
            )
        self.task.load_state_dict(state["task"])
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        for name, sched in self.schedulers.items():
            sched.load_state_dict(state["schedulers"][name])
        self.generator.set_state(state["generator"])
        self.step, self.history, self.skipped = state["step"], state["history"], state["skipped"]
        self.seconds = state["seconds"]

    # ---------------------------------------------------------------- one step
    def _all_grads_finite(self) -> bool:
        return all(
            bool(torch.isfinite(p.grad).all())
            for opt in self.optimizers.values()
            for group in opt.param_groups
            for p in group["params"]
            if p.grad is not None
        )

    def _zero_grad(self) -> None:
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)

    def run_step(self) -> tuple[dict, bool]:
        """One step at :attr:`step` (not counted here); returns ``(logs, skipped)``."""
        self._zero_grad()
        out = self.task.training_step(self.step, self.generator)
        logs = {**out.logs, "loss": out.loss.item()}
        skipped = not torch.isfinite(out.loss)
        if not skipped:
            out.loss.backward()
            skipped = not self._all_grads_finite()
        if skipped:
            self._zero_grad()
        else:
            self.task.clip_gradients()
            for opt in self.optimizers.values():
                opt.step()
        for sched in self.schedulers.values():
            sched.step()
        if not skipped:
            self.task.after_optimizer_step(self.step)
        return logs, skipped

    # ---------------------------------------------------------------- the loop
    def request_stop(self) -> None:
        """Stop after the running step, with a checkpoint (thread-safe)."""
        self._stop.set()

    @contextlib.contextmanager
    def _deferred_sigint(self, bar) -> Iterator[None]:
        """The first Ctrl-C asks for a stop after the running step; the second stops at once."""
        if threading.current_thread() is not threading.main_thread():
            yield  # signal handlers live in the main thread; elsewhere request_stop() stops the run
            return
        previous = signal.getsignal(signal.SIGINT)

        def handler(signum, frame):
            if self._stop.is_set():
                signal.signal(signal.SIGINT, previous)
                raise KeyboardInterrupt
            self._stop.set()
            bar.write("interrupt: stopping after this step with a checkpoint (Ctrl-C again to stop now)")

        signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def fit(self) -> None:
        """Run the remaining steps, validate, and save the final checkpoint."""
        bar = tqdm(total=self.steps, initial=self.step, desc=self.desc, unit="step", disable=not self.progress)
        start = time.perf_counter() - self.seconds
        consecutive = 0
        try:
            with self._deferred_sigint(bar):
                while self.step < self.steps:
                    logs, skipped = self.run_step()
                    if skipped:
                        self.skipped.append(self.step)
                        consecutive += 1
                        bar.write(f"step {self.step}: non-finite loss or gradient, step skipped")
                        if consecutive >= self.max_skipped_steps:
                            raise UserError(
                                f"{consecutive} steps in a row gave non-finite values (last at step "
                                f"{self.step}); lower the learning rates or the guidance scale"
                            )
                    else:
                        consecutive = 0
                    self.step += 1
                    self.seconds = time.perf_counter() - start
                    self.history.append({"step": self.step, **logs})
                    bar.update()
                    bar.set_postfix(self._postfix())
                    image = self.validate() if self.val_every and self.step % self.val_every == 0 else None
                    if self.checkpoint_every and self.step % self.checkpoint_every == 0:
                        self.save_checkpoint()
                    self._report(logs, image)
                    if self._stop.is_set() and self.step < self.steps:
                        self.save_checkpoint()
                        raise Interrupted(f"stopped at step {self.step} of {self.steps}")
        finally:
            bar.close()
        if self.val_dir is not None and (not self.val_every or self.step % self.val_every):
            image = self.validate()
            if image is not None:
                self._report({}, image)
        self.save_checkpoint()

    def _report(self, logs: dict, image: Path | None) -> None:
        if self.callback is not None:
            self.callback(self.step, self.steps, {**logs, **({"val_image": image} if image is not None else {})})

    def _postfix(self) -> dict[str, str]:
        recent = self.history[-20:]
        out = {}
        for key in self.task.progress_keys:
            values = [h[key] for h in recent if isinstance(h.get(key), (int, float))]
            if values:
                out[key] = f"{sum(values) / len(values):.4g}"
        return out

    def validate(self) -> Path | None:
        """Save the task's validation image as ``val_dir/step-NNNNN.png`` (when both exist)."""
        if self.val_dir is None:
            return None
        image = self.task.validation_image(self.step)
        if image is None:
            return None
        path = self.val_dir / f"step-{self.step:05d}.png"
        save_image(path, image)
        return path


@dataclass
class Stage:
    """One stage of a :class:`StagedRun`. ``build`` makes its task when the stage starts (after
    the stages before it finished); ``finish(task, trainer)`` runs after its last step, also when
    a resumed run finds the stage already done, and returns the stage's record."""

    name: str
    steps: int
    seed: int
    build: Callable[[], TrainingTask]
    finish: Callable[[TrainingTask, Trainer], Any] | None = None
    desc: str | None = None
    checkpoint_every: int = 0
    val_every: int = 0
    val_dir: Path | None = None
    max_skipped_steps: int = 20


class StagedRun:
    """Stages run one after another in one command; stage ``s`` checkpoints to
    ``checkpoint_dir/<s.name>.pt`` and resumes from there. While a stage runs, :attr:`task` and
    :attr:`trainer` are its own (e.g. to export what an interrupted run has). ``callback`` and
    ``stop`` go to every stage's trainer (:class:`Trainer`); the callback's ``info`` also names
    the ``"stage"``."""

    def __init__(
        self,
        stages: list[Stage],
        checkpoint_dir: str | Path,
        *,
        resume: bool = False,
        progress: bool = True,
        meta: dict | None = None,
        callback: Callable[[int, int, dict], None] | None = None,
        stop: threading.Event | None = None,
    ):
        self.stages, self.checkpoint_dir = stages, Path(checkpoint_dir)
        self.resume, self.progress, self.meta = resume, progress, meta
        self.callback, self.stop = callback, stop
        self.task: TrainingTask | None = None
        self.trainer: Trainer | None = None

    def checkpoint(self, stage: Stage) -> Path:
        return self.checkpoint_dir / f"{stage.name}.pt"

    def check_start(self, folder: str | Path) -> None:
        """A fresh run may not start over a folder with checkpoints; a resumed one needs one."""
        found = [s.name for s in self.stages if self.checkpoint(s).is_file()]
        if found and not self.resume:
            raise UserError(
                f"'{folder}' already holds a run of this command; pass --resume to continue it or "
                f"choose another output folder"
            )
        if self.resume and not found:
            raise UserError(f"no checkpoint to resume in '{folder}'; run without --resume to start")

    def run(self) -> dict[str, Any]:
        records = {}
        for i, stage in enumerate(self.stages):
            self.task = stage.build()
            desc = stage.desc or (
                stage.name if len(self.stages) == 1 else f"stage {i + 1}/{len(self.stages)} {stage.name}"
            )
            self.trainer = Trainer(
                self.task,
                stage.steps,
                self.checkpoint(stage),
                torch.Generator().manual_seed(stage.seed),
                checkpoint_every=stage.checkpoint_every,
                val_every=stage.val_every,
                val_dir=stage.val_dir,
                max_skipped_steps=stage.max_skipped_steps,
                desc=desc,
                progress=self.progress,
                meta=self.meta,
                callback=self._stage_callback(stage.name),
                stop=self.stop,
            )
            if self.resume and self.trainer.checkpoint.is_file():
                self.trainer.load_checkpoint()
            self.trainer.fit()
            records[stage.name] = stage.finish(self.task, self.trainer) if stage.finish else None
        return records

    def _stage_callback(self, name: str) -> Callable[[int, int, dict], None] | None:
        if self.callback is None:
            return None
        return lambda step, total, info: self.callback(step, total, {**info, "stage": name})
