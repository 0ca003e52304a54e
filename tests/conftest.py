"""Shared fixtures. Nothing is downloaded: models are built from configs with random weights."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import pytest  # noqa: E402

from dream3d.diffusion.build import build_random_model  # noqa: E402
from dream3d.diffusion.core import LatentDiffusion  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A tiny random Stable Diffusion model in diffusers layout (32 px, VAE factor 2)."""
    return build_random_model(tmp_path_factory.mktemp("models") / "tiny-sd", seed=0)


@pytest.fixture(scope="session")
def tiny_core(tiny_model):
    return LatentDiffusion.from_pretrained(tiny_model, device="cpu")
