"""Text to image on the latent diffusion core: the Python face of ``dream3d txt2img`` (``dream3d.txt2img``)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .cameras import Camera, Cameras
from .config import from_dict, to_dict
from .diffusion.core import LatentDiffusion
from .errors import UserError
from .io import ensure_writable_dir, save_image, write_json
from .prior.vocabulary import warn_unknown_words


@dataclass
class Txt2ImgConfig:
    """Every parameter of a text-to-image run (written to ``txt2img.json`` next to the images)."""

    prompt: str = ""
    negative: str | None = None
    model: str | None = None  # None: the bundled shapes prior
    steps: int = 30
    guidance: float = 7.5
    guidance_rescale: float = 0.0  # diffusers' guidance_rescale (LatentDiffusion.sample)
    scheduler: str | None = None  # None: the model's own; see dream3d.diffusion.schedulers
    seed: int = 0
    height: int | None = None  # None: the model's native size
    width: int | None = None
    num_images: int = 1
    device: str | None = None
    dtype: str | None = None
    # (elevation, azimuth, distance, fov) in degrees and world units (docs/cameras.md): the view of a
    # camera-conditioned model; None: any view (and the only choice for other models)
    camera: tuple[float, float, float, float] | None = None


def txt2img(prompt: str, output: str | Path | None = None, progress: bool = True, **params):
    """Generate images for ``prompt``; returns a list of PIL images.

    ``params`` are the fields of :class:`Txt2ImgConfig` (``steps``, ``guidance``, ``seed``, ...).
    With ``output``, the images are also written there as PNGs with ``txt2img.json``. On the CPU,
    ``seed=S`` gives exactly the images of diffusers' ``StableDiffusionPipeline`` called with
    ``generator=torch.Generator("cpu").manual_seed(S)`` and the same settings.
    """
    cfg = from_dict(Txt2ImgConfig, {"prompt": prompt, **params})
    return run_txt2img(cfg, output=output, progress=progress)[0]


def check_txt2img_config(cfg: Txt2ImgConfig) -> None:
    """The checks a run makes before it loads the model (a one-line :class:`UserError` each), for
    callers that check input before queueing it."""
    if not cfg.prompt.strip():
        raise UserError('the prompt is empty; pass some text, e.g. dream3d txt2img "a red cube, side view"')
    if cfg.steps < 1:
        raise UserError(f"steps must be at least 1, got {cfg.steps}; use e.g. --steps 30")
    if cfg.guidance < 0:
        raise UserError(f"guidance must be >= 0, got {cfg.guidance}; use e.g. --guidance 7.5")
    if not 0 <= cfg.guidance_rescale <= 1:
        raise UserError(
            f"guidance rescale must be in [0, 1], got {cfg.guidance_rescale}; use e.g. --guidance-rescale 0.7"
        )


def run_txt2img(cfg: Txt2ImgConfig, output: str | Path | None = None, progress: bool = True):
    """Run ``cfg``; returns (images, record) where record is what ``txt2img.json`` holds."""
    check_txt2img_config(cfg)
    out_dir = ensure_writable_dir(output) if output is not None else None
    if cfg.model in (None, "shapes"):
        warn_unknown_words(cfg.prompt)

    camera = None
    if cfg.camera is not None:
        camera = Cameras.stack(Camera(*cfg.camera)).features()  # Camera checks the values
    start = time.perf_counter()
    core = LatentDiffusion.from_pretrained(cfg.model, device=cfg.device, dtype=cfg.dtype)
    if camera is not None and not core.takes_camera:
        raise UserError(
            f"the model '{core.source}' takes no camera; drop --camera, or use a camera-conditioned "
            f"model (dream3d prior train camera_input=true)"
        )
    load_s = time.perf_counter() - start
    generator = torch.Generator("cpu" if core.device.type == "cpu" else core.device).manual_seed(cfg.seed)
    start = time.perf_counter()
    images = core.sample(
        cfg.prompt,
        negative_prompt=cfg.negative,
        steps=cfg.steps,
        guidance_scale=cfg.guidance,
        guidance_rescale=cfg.guidance_rescale,
        scheduler=cfg.scheduler,
        generator=generator,
        height=cfg.height,
        width=cfg.width,
        num_images=cfg.num_images,
        progress=progress,
        camera=camera,
    )
    sample_s = time.perf_counter() - start
    record = {
        "config": to_dict(cfg),
        "resolved": {
            **core.describe(),
            "height": images[0].height,
            "width": images[0].width,
            "generator": f"torch.Generator('{generator.device}').manual_seed({cfg.seed})",
        },
        "seconds": {"load": round(load_s, 3), "sample": round(sample_s, 3)},
        "images": [],
    }
    if out_dir is not None:
        for i, image in enumerate(images):
            name = f"image-{i:03d}.png"
            save_image(out_dir / name, image)
            record["images"].append(name)
        write_json(out_dir / "txt2img.json", record)
    return images, record
