"""The true-render guidance (``guidance.kind=truth``): the diagnostic's loss is zero on the true
renders, positive elsewhere, and it refuses prompts outside the shapes world."""

import pytest
import torch

from dream3d.cameras import Camera, Cameras
from dream3d.errors import UserError
from dream3d.guidance import GUIDANCE, TruthConfig
from dream3d.shapes.render import render

CAMERAS = [Camera(20.0, 30.0, 1.8, 50.0, 24, 24), Camera(-5.0, 200.0, 2.0, 60.0, 24, 24)]


def _renders(prompt: str) -> torch.Tensor:
    return torch.stack([torch.from_numpy(render(prompt, c, ss=2).rgb) for c in CAMERAS]).permute(0, 3, 1, 2)


def test_truth_loss_vanishes_on_the_true_renders_only():
    guidance = GUIDANCE["truth"](None, TruthConfig(supersample=2), "a green cone")
    cameras, gen = Cameras.stack(CAMERAS), torch.Generator().manual_seed(0)
    assert guidance(_renders("a green cone"), cameras, 0, gen).terms["truth"].item() < 1e-12
    images = _renders("a red cube").requires_grad_(True)
    loss = guidance(images, cameras, 0, gen).terms["truth"]
    assert loss.item() > 1e-3
    loss.backward()
    assert images.grad.abs().sum() > 0


def test_truth_needs_a_shapes_world_prompt():
    with pytest.raises(UserError, match="shapes-world prompt"):
        GUIDANCE["truth"](None, TruthConfig(), "a hamburger")
