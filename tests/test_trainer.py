"""The one trainer on a toy task: resume equals an uninterrupted run, stages, stop requests, the NaN guard."""

import numpy as np
import pytest
import torch
from torch import nn

from dream3d.errors import UserError
from dream3d.trainer import Interrupted, Stage, StagedRun, StepOutput, Trainer, TrainingTask


class Regression(nn.Module, TrainingTask):
    """Fit ``y = 3 x - 1`` from noisy batches drawn with the trainer's generator; Adam with a decaying rate."""

    progress_keys = ("loss", "slope")

    def __init__(self, poison_at=(), stop=None):
        super().__init__()
        torch.manual_seed(0)
        self.line = nn.Linear(1, 1)
        self.optimizer = torch.optim.Adam(self.parameters(), lr=0.1)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: 0.99**s)
        self.poison_at, self.stop, self.after = set(poison_at), stop, []

    def optimizers(self):
        return {"adam": self.optimizer}

    def lr_schedulers(self):
        return {"decay": self.scheduler}

    def training_step(self, step, generator):
        if self.stop is not None and step == self.stop[0]:
            self.stop[1]()
        x = torch.randn(16, 1, generator=generator)
        y = 3 * x - 1 + 0.1 * torch.randn(16, 1, generator=generator)
        loss = (self.line(x) - y).square().mean()
        if step in self.poison_at:
            loss = loss * float("nan")
        return StepOutput(loss, {"slope": self.line.weight.item()})

    def after_optimizer_step(self, step):
        self.after.append(step)

    def validation_image(self, step):
        return np.full((4, 4, 3), step % 256, np.uint8)


def fit(task, steps, path, **kw):
    trainer = Trainer(task, steps, path, torch.Generator().manual_seed(1), progress=False, **kw)
    trainer.fit()
    return trainer


def test_resume_from_any_checkpoint_equals_the_uninterrupted_run(tmp_path):
    whole = fit(Regression(), 30, tmp_path / "whole.pt")
    assert abs(whole.history[-1]["slope"] - 3.0) < abs(whole.history[0]["slope"] - 3.0) - 1  # it learns
    for stop_at in (7, 20):
        part = Trainer(
            Regression(), stop_at, tmp_path / f"part{stop_at}.pt", torch.Generator().manual_seed(1), progress=False
        )
        part.fit()
        resumed = Trainer(
            Regression(), 30, tmp_path / f"part{stop_at}.pt", torch.Generator().manual_seed(99), progress=False
        )
        resumed.load_checkpoint()
        resumed.fit()
        assert resumed.history == whole.history
        assert torch.equal(resumed.task.line.weight, whole.task.line.weight)
        assert resumed.schedulers["decay"].get_last_lr() == whole.schedulers["decay"].get_last_lr()


def test_request_stop_finishes_the_step_saves_and_raises(tmp_path):
    holder = {}
    task = Regression(stop=(5, lambda: holder["trainer"].request_stop()))
    trainer = Trainer(task, 30, tmp_path / "run.pt", torch.Generator().manual_seed(1), progress=False)
    holder["trainer"] = trainer
    with pytest.raises(Interrupted):
        trainer.fit()
    state = torch.load(tmp_path / "run.pt", weights_only=False)
    assert state["step"] == trainer.step == 6  # step 5 ran to its end, then the checkpoint
    resumed = Trainer(Regression(), 30, tmp_path / "run.pt", torch.Generator(), progress=False)
    resumed.load_checkpoint()
    resumed.fit()
    assert resumed.history == fit(Regression(), 30, tmp_path / "whole.pt").history


def test_nan_guard_skips_and_stops_and_hooks_run_only_after_real_steps(tmp_path):
    task = Regression(poison_at={3})
    trainer = fit(task, 6, tmp_path / "a.pt")
    assert trainer.skipped == [3] and task.after == [0, 1, 2, 4, 5]
    assert len(trainer.history) == 6 and np.isnan(trainer.history[3]["loss"])
    with pytest.raises(UserError, match="3 steps in a row"):
        fit(Regression(poison_at={2, 3, 4, 5}), 8, tmp_path / "b.pt", max_skipped_steps=3)


def test_validation_images_every_n_steps_and_at_the_end(tmp_path):
    fit(Regression(), 7, tmp_path / "ckpt.pt", val_every=3, val_dir=tmp_path / "val")
    assert sorted(p.name for p in (tmp_path / "val").iterdir()) == [
        "step-00003.png",
        "step-00006.png",
        "step-00007.png",
    ]


def test_checkpoints_must_match_their_run(tmp_path):
    fit(Regression(), 3, tmp_path / "run.pt", meta={"prompt": "a red cube"})
    other = Trainer(Regression(), 3, tmp_path / "run.pt", torch.Generator(), meta={"prompt": "a blue cube"})
    with pytest.raises(UserError, match="prompt 'a red cube'"):
        other.load_checkpoint()
    torch.save({"step": 3}, tmp_path / "old.pt")  # the format before the one trainer
    with pytest.raises(UserError, match="older dream3d"):
        Trainer(Regression(), 3, tmp_path / "old.pt", torch.Generator()).load_checkpoint()


def test_staged_run_resumes_each_stage_and_skips_finished_ones(tmp_path):
    built = []

    def stages(stop_second_at=None):
        def build(name):
            built.append(name)
            return Regression(
                stop=(stop_second_at, lambda: run.trainer.request_stop())
                if name == "second" and stop_second_at is not None
                else None
            )

        return [
            Stage(
                name,
                steps,
                seed,
                build=lambda name=name: build(name),
                finish=lambda task, trainer: (trainer.step, task.line.weight.item()),
                checkpoint_every=4,
            )
            for name, steps, seed in (("first", 10, 1), ("second", 12, 2))
        ]

    whole = StagedRun(stages(), tmp_path / "a").run()
    run = StagedRun(stages(stop_second_at=6), tmp_path / "b")
    with pytest.raises(Interrupted):
        run.run()
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["first.pt", "second.pt"]
    with pytest.raises(UserError, match="--resume"):
        StagedRun(stages(), tmp_path / "b").check_start(tmp_path / "b")
    built.clear()
    resumed = StagedRun(stages(), tmp_path / "b", resume=True).run()
    assert resumed == whole and built == ["first", "second"]  # the finished stage is loaded, not rerun
