"""A small CNN that reads a shapes-world image: which colour, which shape, and (for cones and
cylinders) whether it is seen from overhead. Trained on ground-truth renders only; it is the
judge of :mod:`dream3d.prior.evaluate`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..io import atomic_path
from ..shapes.objects import SHAPES
from ..trainer import SingleModelTask, StepOutput, Trainer

VIEW_SHAPES = ("cone", "cylinder")  # shapes whose overhead and side views differ clearly


class ShapesClassifier(nn.Module):
    """32 px RGB in [0, 1] -> logits for shape (5), colour (6) and overhead (1)."""

    def __init__(self, width: int = 32):
        super().__init__()

        def block(cin, cout):
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1),
                nn.GroupNorm(8, cout),
                nn.SiLU(),
                nn.Conv2d(cout, cout, 3, padding=1),
                nn.GroupNorm(8, cout),
                nn.SiLU(),
                nn.MaxPool2d(2),
            )

        self.features = nn.Sequential(
            block(3, width), block(width, 2 * width), block(2 * width, 2 * width), nn.AdaptiveAvgPool2d(2), nn.Flatten()
        )
        self.hidden = nn.Sequential(nn.Linear(8 * width, 128), nn.SiLU())
        self.shape_head = nn.Linear(128, 5)
        self.colour_head = nn.Linear(128, 6)
        self.overhead_head = nn.Linear(128, 1)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.hidden(self.features(images * 2 - 1))
        return {
            "shape": self.shape_head(h),
            "colour": self.colour_head(h),
            "overhead": self.overhead_head(h).squeeze(-1),
        }

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        self.eval()
        out = [self(chunk) for chunk in images.split(256)]
        return {
            "shape": torch.cat([o["shape"] for o in out]).argmax(-1),
            "colour": torch.cat([o["colour"] for o in out]).argmax(-1),
            "overhead": torch.cat([o["overhead"] for o in out]) > 0,
        }


def _labels(data):
    view_mask = torch.from_numpy(sum(data.shape_index == SHAPES.index(s) for s in VIEW_SHAPES).astype(bool))
    return (
        torch.from_numpy(data.shape_index).long(),
        torch.from_numpy(data.colour_index).long(),
        torch.from_numpy(data.overhead).float(),
        view_mask,
    )


def accuracy(model: ShapesClassifier, data) -> dict[str, float]:
    """Accuracy of each head on ``data`` (the overhead head on cones and cylinders only)."""
    pred = model.predict(data.tensors())
    shape, colour, overhead, view_mask = _labels(data)
    return {
        "shape": float((pred["shape"] == shape).float().mean()),
        "colour": float((pred["colour"] == colour).float().mean()),
        "overhead": float((pred["overhead"][view_mask] == overhead[view_mask].bool()).float().mean()),
    }


class ClassifierTraining(SingleModelTask):
    """Cross-entropy on shape and colour (and overhead for cones and cylinders), on ground-truth
    renders with mild flip/blur/noise augmentation (so samples are read fairly)."""

    name = "classifier"

    def __init__(self, model: ShapesClassifier, train_data, steps: int, batch: int, lr: float):
        self.model, self.batch = model.train(), batch
        self.images = train_data.tensors()
        self.labels = _labels(train_data)
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(self.optimizer, max_lr=lr, total_steps=steps)

    def training_step(self, step: int, generator: torch.Generator) -> StepOutput:
        batch, (shape, colour, overhead, view_mask) = self.batch, self.labels
        idx = torch.randint(len(self.images), (batch,), generator=generator)
        x = self.images[idx]
        x = torch.where(torch.rand(batch, 1, 1, 1, generator=generator) < 0.5, x.flip(-1), x)
        blur = nn.functional.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
        x = torch.where(torch.rand(batch, 1, 1, 1, generator=generator) < 0.3, blur, x)
        x = (
            x + 0.03 * torch.rand(batch, 1, 1, 1, generator=generator) * torch.randn(x.shape, generator=generator)
        ).clamp(0, 1)
        out = self.model(x)
        ce = nn.functional.cross_entropy
        vm = view_mask[idx]
        loss = ce(out["shape"], shape[idx]) + ce(out["colour"], colour[idx])
        if vm.any():
            loss = loss + nn.functional.binary_cross_entropy_with_logits(out["overhead"][vm], overhead[idx][vm])
        return StepOutput(loss, {})


def train_classifier(
    train_data, steps: int = 1500, batch: int = 64, lr: float = 2e-3, seed: int = 0, progress: bool = True
) -> tuple[ShapesClassifier, dict]:
    """Train a classifier on ground-truth renders (:class:`ClassifierTraining`; a few minutes, not checkpointed)."""
    torch.manual_seed(seed)
    model = ShapesClassifier()
    trainer = Trainer(
        ClassifierTraining(model, train_data, steps, batch, lr),
        steps,
        None,
        torch.Generator().manual_seed(seed),
        desc="classifier",
        progress=progress,
    )
    trainer.fit()
    return model.eval(), {"steps": steps, "seconds": round(trainer.seconds, 1)}


def save_classifier(model: ShapesClassifier, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        save_file(model.state_dict(), str(tmp))


def load_classifier(path: str | Path) -> ShapesClassifier:
    model = ShapesClassifier()
    model.load_state_dict(load_file(str(path)))
    return model.eval()
