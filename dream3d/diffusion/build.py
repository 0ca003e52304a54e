"""Build a Stable Diffusion model of any size from a spec, with fresh weights.

Used by the bundled prior's training (``dream3d prior train``), by the tests (tiny random models,
nothing downloaded) and by the benchmarks. The model is the standard diffusers family -
``AutoencoderKL``, ``CLIPTextModel`` + ``CLIPTokenizer``, ``UNet2DConditionModel`` and a DDPM noise
schedule - saved in diffusers layout, so ``StableDiffusionPipeline.from_pretrained`` loads it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from ..cameras import CAMERA_FEATURES
from ..errors import UserError
from ..io import write_json
from .loading import CAMERA_FILE
from .tokenizer import build_word_tokenizer, save_tokenizer

DEFAULT_WORDS = (
    "a an the of on in with and , . photo image render view front side back overhead "
    "red green blue yellow purple orange white black gray cube sphere cylinder cone torus"
).split()


@dataclass
class LatentModelSpec:
    """Sizes shared by every latent diffusion model built here: the VAE, the UNet and the noise schedule."""

    image_size: int = 32
    latent_channels: int = 4
    vae_channels: tuple[int, ...] = (16, 32)  # VAE factor = 2 ** (len - 1)
    vae_layers_per_block: int = 1
    vae_scaling_factor: float = 1.0
    unet_channels: tuple[int, ...] = (32, 64)
    unet_layers_per_block: int = 1
    unet_heads: int = 2
    unet_cross_attention_blocks: tuple[bool, ...] = (False, True)
    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    beta_schedule: str = "scaled_linear"
    prediction_type: str = "epsilon"

    @property
    def vae_factor(self) -> int:
        return 2 ** (len(self.vae_channels) - 1)


@dataclass
class ModelSpec(LatentModelSpec):
    """Sizes of every component of a text-to-image model. The defaults are a tiny model for tests (~0.3M parameters)."""

    text_hidden: int = 32
    text_layers: int = 1
    text_heads: int = 2
    max_length: int = 16
    words: tuple[str, ...] = tuple(DEFAULT_WORDS)
    camera_input: bool = False  # a camera-conditioned UNet (class embedding of the camera features)
    extra: dict = field(default_factory=dict)


def build_vae(spec: LatentModelSpec) -> AutoencoderKL:
    """A fresh ``AutoencoderKL`` of ``spec``'s sizes (weights from the global generator)."""
    n_vae = len(spec.vae_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n_vae,
        up_block_types=("UpDecoderBlock2D",) * n_vae,
        block_out_channels=tuple(spec.vae_channels),
        layers_per_block=spec.vae_layers_per_block,
        latent_channels=spec.latent_channels,
        norm_num_groups=min(32, min(spec.vae_channels)),
        sample_size=spec.image_size,
        scaling_factor=spec.vae_scaling_factor,
    )


def build_unet(
    spec: LatentModelSpec, cross_attention_dim: int, in_channels: int | None = None, **extra
) -> UNet2DConditionModel:
    """A fresh ``UNet2DConditionModel`` on ``spec``'s latents; ``in_channels`` defaults to the latent
    channels (a Zero-1-to-3 UNet takes twice as many: the noisy latents and the conditioning image's)."""
    cross = spec.unet_cross_attention_blocks
    if len(cross) != len(spec.unet_channels):
        raise UserError(
            f"unet_cross_attention_blocks has {len(cross)} flags for {len(spec.unet_channels)} UNet levels; give one per level"
        )
    down = tuple("CrossAttnDownBlock2D" if c else "DownBlock2D" for c in cross)
    up = tuple("CrossAttnUpBlock2D" if c else "UpBlock2D" for c in reversed(cross))
    return UNet2DConditionModel(
        sample_size=spec.image_size // spec.vae_factor,
        in_channels=in_channels or spec.latent_channels,
        out_channels=spec.latent_channels,
        down_block_types=down,
        up_block_types=up,
        block_out_channels=tuple(spec.unet_channels),
        layers_per_block=spec.unet_layers_per_block,
        cross_attention_dim=cross_attention_dim,
        # diffusers' historical naming: for this class `attention_head_dim` is the number of heads.
        attention_head_dim=spec.unet_heads,
        norm_num_groups=min(32, min(spec.unet_channels)),
        **extra,
    )


def build_noise_schedule(spec: LatentModelSpec) -> DDPMScheduler:
    """The training noise schedule of ``spec`` (a ``DDPMScheduler``, sample clipping off)."""
    return DDPMScheduler(
        num_train_timesteps=spec.num_train_timesteps,
        beta_start=spec.beta_start,
        beta_end=spec.beta_end,
        beta_schedule=spec.beta_schedule,
        prediction_type=spec.prediction_type,
        clip_sample=False,
        steps_offset=1,
    )


def build_components(spec: ModelSpec, seed: int = 0) -> dict:
    """Fresh ``vae``, ``text_encoder``, ``tokenizer``, ``unet`` and ``scheduler`` for ``spec``."""
    torch.manual_seed(seed)  # diffusers/transformers initialise weights from the global generator
    tokenizer = build_word_tokenizer(spec.words, max_length=spec.max_length)
    eos = tokenizer.convert_tokens_to_ids(tokenizer.eos_token)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=spec.text_hidden,
            intermediate_size=4 * spec.text_hidden,
            num_hidden_layers=spec.text_layers,
            num_attention_heads=spec.text_heads,
            max_position_embeddings=spec.max_length,
            bos_token_id=tokenizer.convert_tokens_to_ids(tokenizer.bos_token),
            eos_token_id=eos,
            pad_token_id=eos,
        )
    )
    vae = build_vae(spec)
    unet = build_unet(
        spec,
        spec.text_hidden,
        # the camera enters as diffusers' "projection" class embedding, added to the time embedding
        class_embed_type="projection" if spec.camera_input else None,
        projection_class_embeddings_input_dim=len(CAMERA_FEATURES) if spec.camera_input else None,
    )
    scheduler = build_noise_schedule(spec)
    return {"vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer, "unet": unet, "scheduler": scheduler}


def save_model(components: dict, folder: str | Path) -> Path:
    """Save components in diffusers layout (safetensors), loadable by ``StableDiffusionPipeline``."""
    from diffusers import StableDiffusionPipeline  # noqa: PLC0415 - deferred: its module imports transformers' image processors (slow, and they warn without torchvision)

    folder = Path(folder)
    pipe = StableDiffusionPipeline(
        vae=components["vae"],
        text_encoder=components["text_encoder"],
        tokenizer=components["tokenizer"],
        unet=components["unet"],
        scheduler=components["scheduler"],
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    drop_source_paths(folder)
    save_tokenizer(components["tokenizer"], folder / "tokenizer")
    if components["unet"].config.class_embed_type == "projection":
        write_json(folder / CAMERA_FILE, {"features": list(CAMERA_FEATURES)})
    return folder


def drop_source_paths(folder: str | Path) -> None:
    """Remove ``_name_or_path`` from the component configs under ``folder``: a component loaded
    from another folder (a reused VAE) would otherwise record that machine's path in the saved model."""
    for path in sorted(Path(folder).glob("*/config.json")):
        config = json.loads(path.read_text())
        if config.pop("_name_or_path", None) is not None:
            write_json(path, config)


def build_random_model(folder: str | Path, spec: ModelSpec | None = None, seed: int = 0) -> Path:
    """Write a randomly initialised model of ``spec`` (default: tiny) to ``folder``."""
    return save_model(build_components(spec or ModelSpec(), seed=seed), folder)
