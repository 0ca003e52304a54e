"""Shared fixtures. Nothing is downloaded: models are built from configs with random weights."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config  # noqa: E402
from transformers.models.dpt.image_processing_pil_dpt import DPTImageProcessorPil  # noqa: E402

from dream3d.diffusion.build import build_random_model  # noqa: E402
from dream3d.diffusion.core import LatentDiffusion  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A tiny random Stable Diffusion model in diffusers layout (32 px, VAE factor 2)."""
    return build_random_model(tmp_path_factory.mktemp("models") / "tiny-sd", seed=0)


@pytest.fixture(scope="session")
def tiny_core(tiny_model):
    return LatentDiffusion.from_pretrained(tiny_model, device="cpu")


@pytest.fixture(scope="session")
def tiny_depth_model(tmp_path_factory):
    """A tiny random Depth Anything model (transformers) with its image processor; nothing downloaded."""
    torch.manual_seed(0)
    backbone = Dinov2Config(
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        image_size=56,
        patch_size=14,
        out_features=["stage1", "stage2"],
        reshape_hidden_states=False,
    )
    config = DepthAnythingConfig(
        backbone_config=backbone,
        reassemble_hidden_size=16,
        reassemble_factors=[4, 2],
        neck_hidden_sizes=[8, 16],
        fusion_hidden_size=16,
        head_hidden_size=8,
        patch_size=14,
    )
    model = DepthAnythingForDepthEstimation(config)
    with torch.no_grad():
        model.head.conv3.bias.fill_(1.0)  # positive output so the map is not all zeros
    path = tmp_path_factory.mktemp("models") / "tiny-depth-anything"
    model.save_pretrained(path)
    DPTImageProcessorPil(size={"height": 56, "width": 56}, keep_aspect_ratio=False).save_pretrained(path)
    return path
