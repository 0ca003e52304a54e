"""Image to 3D (``dream3d img2mesh``, ``dream3d.img2mesh``): a Zero-1-to-3 run, then its asset.

One object in one image -> a mesh. The image is read and its object separated
(:func:`load_input_image`: the alpha channel, else a plain background found at the border),
prepared for the reference view (:func:`prepare_reference`: made square, optionally framed, at
the reference size; a monocular depth map when the config asks for one) and for the view prior's
conditioning (framed as the model was trained), then the
:class:`~dream3d.systems.image_to_3d.ImageTo3D` system (the DreamFusion parts, Zero-1-to-3
guidance on random views, the reference view's losses) runs on the one trainer and its geometry is
exported. Outputs in the run folder, as ``dream3d txt2mesh`` writes them
(:mod:`dream3d.text_to_3d`): ``config.yaml``, ``reference.png`` (the prepared input, RGBA),
``checkpoints/coarse.pt`` (``resume=True`` continues to the uninterrupted run's result),
``val/step-NNNNN.png`` (the input and its render, then RGB | normal | opacity around the object),
``mesh.glb/.obj/.ply``, ``turntable.mp4/.gif``, ``export.json``, ``metrics.json``.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from .diffusion.devices import resolve_device
from .diffusion.framing import frame_object, on_background
from .errors import UserError
from .io import ensure_writable_dir, save_image
from .systems.image_to_3d import ImageTo3D, ImageTo3DConfig
from .systems.reference import ReferenceConfig, ReferenceView
from .text_to_3d import CONFIG_DIR, RunSettings, load_run_config, run_and_export
from .trainer import Stage, StagedRun

MIN_SIDE = 32  # pixels: smaller inputs are refused
MIN_OBJECT_FRACTION = 0.002  # of the pixels: less is "no object"
MAX_OBJECT_FRACTION = 0.98  # more is "no background to separate the object from"
BORDER_TOLERANCE = 0.08  # a plain background's pixels differ from its colour by at most this (max over RGB)
PLAIN_BORDER_SHARE = 0.9  # this share of the border pixels must be the background's colour


@dataclass
class Img2MeshConfig(RunSettings, ImageTo3DConfig):
    """An image-to-3D run: the system's parts (inherited) and the run's own settings."""

    image: str = ""  # the input image's path


def default_config_path(model: str | None) -> Path:
    """``configs/shapes-zero123.yaml`` for the bundled view prior, ``configs/zero123-sd.yaml`` otherwise."""
    return CONFIG_DIR / ("shapes-zero123.yaml" if model in (None, "shapes-view") else "zero123-sd.yaml")


def load_img2mesh_config(image: str | Path, *args, **kwargs) -> Img2MeshConfig:
    """The config of a run on ``image``, the other arguments as
    :func:`~dream3d.text_to_3d.load_txt2mesh_config` takes them (``config``, ``model``, ``seed``,
    ``overrides``, ``values``): the file (default: by model), then the image, model, seed and nested
    values, then ``key=value`` overrides."""
    return load_run_config(Img2MeshConfig, default_config_path, *args, image=str(image), **kwargs)


# ------------------------------------------------------------------------------------- the input
def load_input_image(path: str | Path) -> np.ndarray:
    """The image at ``path`` as straight-colour RGBA ``(H, W, 4)`` float32 in [0, 1], its alpha the
    object: the file's own alpha when it has transparency, else 1 wherever a pixel differs from a
    plain background found at the image's border (:func:`plain_background_alpha`). A one-line
    :class:`UserError` for a folder, a missing or unreadable file, a tiny image, an image without
    transparency or a plain background, or one without a separable object."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"'{path}' is a folder; pass one image file (an RGBA PNG, or a photo on a plain background)")
    if not path.is_file():
        raise UserError(f"image '{path}' does not exist; pass an image file")
    try:
        with Image.open(path) as im:
            im.load()
            transparent = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info
            rgba = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        reason = (str(e).splitlines() or [type(e).__name__])[0][:120]
        raise UserError(f"cannot read '{path}' as an image ({reason}); pass a PNG, JPEG or WebP file") from None
    height, width = rgba.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise UserError(f"image '{path}' is {width}x{height} pixels; an input needs at least {MIN_SIDE} pixels a side")
    if transparent and float(rgba[..., 3].min()) < 0.5:
        alpha = rgba[..., 3]
    else:
        alpha = plain_background_alpha(rgba[..., :3], path)
    alpha = near_object(alpha)
    covered = float((alpha >= 0.5).mean())
    if not MIN_OBJECT_FRACTION <= covered <= MAX_OBJECT_FRACTION:
        why = "almost nothing is opaque" if covered < MIN_OBJECT_FRACTION else "it covers the whole image"
        raise UserError(
            f"found no object to separate in '{path}' ({why}); pass an RGBA PNG with the object opaque on a "
            f"transparent background, or the object whole on a plain background"
        )
    return np.concatenate([rgba[..., :3], alpha[..., None]], axis=-1)


def plain_background_alpha(rgb: np.ndarray, path: str | Path = "the image") -> np.ndarray:
    """Alpha of an object on a plain background. The background's colour is the median of the
    image's border (a ring ~1.5% of the side wide), which must hold it in most of its pixels. Pixels
    that differ from it by more than the tolerance (the largest difference over RGB) are the
    object's; inside the object alpha is 1, and on its outline (a pixel beside the background) it
    is the pixel's difference over the mean difference of the inner pixels beside it (3 x 3; the
    largest within 5 x 5 when none is): an outline pixel mixes the two colours by its coverage."""
    from scipy.ndimage import binary_erosion, maximum_filter, uniform_filter  # noqa: PLC0415 - deferred: only image inputs need it

    h, w = rgb.shape[:2]
    b = max(1, round(0.015 * min(h, w)))
    border = np.concatenate(
        [rgb[:b].reshape(-1, 3), rgb[-b:].reshape(-1, 3), rgb[:, :b].reshape(-1, 3), rgb[:, -b:].reshape(-1, 3)]
    )
    colour = np.median(border, axis=0)
    plain = float((np.abs(border - colour).max(-1) <= BORDER_TOLERANCE).mean())
    if plain < PLAIN_BORDER_SHARE:
        raise UserError(
            f"'{path}' has no transparency and no plain background to cut the object from ({plain:.0%} of its "
            f"border is one colour); pass an RGBA PNG (the object on a transparent background) or a photo of the "
            f"object on a plain background"
        )
    difference = np.abs(rgb - colour).max(-1)
    solid = difference > BORDER_TOLERANCE
    inner = binary_erosion(solid, border_value=1)
    count = uniform_filter(inner.astype(np.float64), size=3)
    beside = uniform_filter(np.where(inner, difference, 0.0), size=3) / np.maximum(count, 1e-9)
    nearby = np.where(count > 0, beside, maximum_filter(np.where(inner, difference, 0.0), size=5))
    outline = difference / np.maximum(np.maximum(nearby, difference), 1e-6)
    return np.where(inner, 1.0, np.where(solid, outline, 0.0)).astype(np.float32)


def near_object(alpha: np.ndarray, reach: float = 0.02) -> np.ndarray:
    """``alpha`` kept only within ``reach`` (a fraction of the shorter side) of the object's pixels
    (alpha >= 0.5): the soft edge stays, a detached soft shadow or haze (which the 0.5 mask leaves
    out anyway) does not grey the image that conditions the prior."""
    from scipy.ndimage import distance_transform_edt  # noqa: PLC0415 - deferred: only image inputs need it

    solid = alpha >= 0.5
    if not solid.any():
        return alpha
    near = distance_transform_edt(~solid) <= max(1.0, reach * min(alpha.shape))
    return np.where(near, alpha, 0.0).astype(np.float32)


def square(rgba: torch.Tensor) -> torch.Tensor:
    """An RGBA ``(4, H, W)`` image padded with transparent pixels to a square about its centre."""
    _, h, w = rgba.shape
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    return F.pad(rgba, (left, side - w - left, top, side - h - top))


def resize_rgba(rgba: torch.Tensor, size: int) -> torch.Tensor:
    """A square straight-colour RGBA ``(4, S, S)`` image at ``size`` pixels (anti-aliased, on
    premultiplied colour, so that transparent pixels' colour does not bleed into the object)."""
    if rgba.shape[-1] == size:
        return rgba
    premult = torch.cat([rgba[:3] * rgba[3:], rgba[3:]])[None]
    out = F.interpolate(premult, size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]
    alpha = out[3:].clamp(0, 1)
    rgb = torch.where(alpha > 1e-6, out[:3] / alpha.clamp_min(1e-6), torch.zeros_like(out[:3]))
    return torch.cat([rgb.clamp(0, 1), alpha])


def prepare_image(rgba: np.ndarray, size: int, fraction: float | None) -> torch.Tensor:
    """The input as a square ``(4, size, size)`` tensor: framed (its object centred, its box's
    larger side ``fraction`` of the side) or, with ``fraction=None``, padded about the image's centre."""
    x = square(torch.from_numpy(np.ascontiguousarray(rgba)).permute(2, 0, 1).float())
    if fraction is not None:
        return frame_object(x, fraction, size=size)
    return resize_rgba(x, size)


def prepare_reference(rgba: np.ndarray, cfg: ReferenceConfig, depth_model=None) -> ReferenceView:
    """The reference view of an input (:func:`load_input_image`) for ``cfg`` (its camera, size and
    framing), with an inverse depth map from ``depth_model`` (a ``stereo.depth_sources.DepthModel``
    or any ``(stem, uint8 image) -> inverse depth`` callable) when given."""
    image = prepare_image(rgba, cfg.size, cfg.object_fraction)
    depth = None
    if depth_model is not None:
        work = max(cfg.size, 256)  # the depth model's input: the same view, large enough for its patches
        big = prepare_image(rgba, work, cfg.object_fraction)
        rgb8 = (on_background(big).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        inverse = torch.as_tensor(np.asarray(depth_model("reference", rgb8), np.float32))[None, None]
        depth = F.interpolate(inverse, size=(cfg.size, cfg.size), mode="area")[0, 0]
    return ReferenceView.from_rgba(image, cfg.camera(), depth)


def image_digest(path: str | Path) -> str:
    """A short hash of the image file's bytes (a checkpoint resumes only with the same image)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


# ------------------------------------------------------------------------------------- the run
def check_img2mesh_config(cfg: Img2MeshConfig) -> None:
    """The checks a run makes before it starts (a one-line :class:`UserError` each)."""
    if not str(cfg.image).strip():
        raise UserError("no input image; pass one, e.g. dream3d img2mesh photo.png -o out")
    if cfg.steps < 1:
        raise UserError(f"steps must be at least 1, got {cfg.steps}")


def run_img2mesh(
    cfg: Img2MeshConfig,
    out: str | Path,
    resume: bool = False,
    progress: bool = True,
    callback: Callable[[int, int, dict], None] | None = None,
    stop: threading.Event | None = None,
) -> dict:
    """Read and prepare the input, optimise, validate, checkpoint and export; returns
    ``metrics.json``'s content (module docstring). Ctrl-C stops after the running step with a
    checkpoint, exports what the run has and writes ``metrics.json`` (``"interrupted": true``)
    before the interrupt propagates; ``callback`` and ``stop`` as :func:`~dream3d.text_to_3d.run_txt2mesh`
    takes them."""
    from .diffusion.zero123 import ViewDiffusion  # noqa: PLC0415 - deferred: diffusers and transformers load here

    check_img2mesh_config(cfg)
    rgba = load_input_image(cfg.image)  # bad images and models fail here, before anything is written
    device = resolve_device(cfg.device)
    core = ViewDiffusion.from_pretrained(cfg.model, device=device, dtype=cfg.dtype)
    out = ensure_writable_dir(out)
    meta = {"image": str(cfg.image), "image_sha256": image_digest(cfg.image), "seed": cfg.seed}
    stage = Stage(
        "coarse",
        cfg.steps,
        cfg.seed,
        build=lambda: ImageTo3D(cfg, reference, condition, core, device, cfg.seed),
        desc="img2mesh",
        checkpoint_every=cfg.checkpoint_every,
        val_every=cfg.val_every,
        val_dir=out / "val",
        max_skipped_steps=cfg.max_skipped_steps,
    )
    run = StagedRun(
        [stage], out / "checkpoints", resume=resume, progress=progress, meta=meta, callback=callback, stop=stop
    )
    run.check_start(out)
    depth_model = None
    if cfg.reference.depth > 0:
        from stereo.depth_sources import DepthModel  # noqa: PLC0415 - deferred: transformers' depth models

        depth_model = DepthModel(cfg.reference.depth_model, device=str(device))
    reference = prepare_reference(rgba, cfg.reference, depth_model)
    conditioning = prepare_image(rgba, core.default_size, core.object_fraction)
    condition = on_background(conditioning)[None]
    save_image(out / "reference.png", _to_uint8(torch.cat([reference.rgb[0], reference.mask[0]], dim=-1)))
    save_image(out / "condition.png", _to_uint8(conditioning.permute(1, 2, 0)))
    return run_and_export(cfg, out, run, core, {k: meta[k] for k in ("image", "seed")})


def _to_uint8(hwc: torch.Tensor) -> np.ndarray:
    return (hwc.clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)


def img2mesh(image: str | Path, output: str | Path, config: str | Path | None = None, **values) -> dict:
    """Python face of ``dream3d img2mesh``; returns ``metrics.json``'s content.

    ``values``: ``model``, ``seed``, ``resume`` and ``progress`` as :func:`dream3d.txt2mesh` takes
    them, and config fields, nested values as dicts or config dataclasses:
    ``img2mesh("cube.png", "out", steps=300, reference={"elevation_deg": 20})``.
    """
    resume, progress = values.pop("resume", False), values.pop("progress", True)
    cfg = load_img2mesh_config(image, config, values.pop("model", None), values.pop("seed", None), values=values)
    return run_img2mesh(cfg, output, resume=resume, progress=progress)


__all__ = [
    "Img2MeshConfig",
    "check_img2mesh_config",
    "img2mesh",
    "load_img2mesh_config",
    "load_input_image",
    "prepare_reference",
    "run_img2mesh",
]
