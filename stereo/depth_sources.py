"""Where the monocular depth of a photo comes from.

A depth source is a callable ``source(stem, image) -> inverse_depth``: given the sample's name
and its H x W x 3 uint8 image, it returns an H x W float32 *inverse* depth map (larger =
nearer, any scale) at the image's size. Three kinds:

- :class:`DepthDir`: precomputed maps ``<stem>.npy``, ``<stem>.pfm`` or ``<stem>.png``
  (16-bit, or 8-bit) in a folder, holding inverse depth (``kind="inverse"``, e.g. saved
  MiDaS / DPT / Depth Anything outputs) or depth (``kind="depth"``, e.g. metric depth in
  metres; converted as ``1 / depth``, with depth <= 0 or non-finite taken as infinitely far).
- :class:`DepthModel`: a ``transformers`` depth-estimation model from a folder or hub id.
  Relative models (DPT / MiDaS, Depth Anything V1/V2 "relative") output inverse depth;
  metric models (ZoeDepth, GLPN, Depth Pro, Prompt Depth Anything, Depth Anything "metric"
  variants, whose config says ``depth_estimation_type == "metric"``) output depth in metres.
  :func:`model_output_kind` decides from the config; ``kind=`` overrides it.
- The shapes world's stereo scenes (see :mod:`stereo.shapes`), whose true disparity is an
  exact inverse depth: written to a folder, they feed :class:`DepthDir` with no download.

A map whose size differs from the image's is resized bilinearly to it.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dream3d.errors import ModelLoadError

from ._arrays import as_map
from .pfm import read_pfm
from .resize import resize_map

DEPTH_SUFFIXES = (".npy", ".pfm", ".png")
DEPTH_KINDS = ("inverse", "depth")

METRIC_MODEL_TYPES = frozenset({"zoedepth", "glpn", "depth_pro", "prompt_depth_anything"})
RELATIVE_MODEL_TYPES = frozenset({"dpt", "depth_anything"})

DepthSource = Callable[[str, np.ndarray], np.ndarray]


class MissingDepth(Exception):
    """No depth map for a sample (reported per sample; the run goes on)."""


class UnreadableDepth(Exception):
    """A depth map file that cannot be read."""


def check_kind(kind: str) -> str:
    if kind not in DEPTH_KINDS:
        raise ValueError(f"depth kind must be 'inverse' or 'depth', got {kind!r}")
    return kind


def to_inverse_depth(values: Any, kind: str) -> np.ndarray:
    """float32 inverse depth from a map of ``kind`` ``"inverse"`` (as is) or ``"depth"`` (``1 / depth``).

    Depth <= 0 or non-finite (no measurement, sky) becomes inverse depth 0: infinitely far.
    """
    check_kind(kind)
    x = np.asarray(as_map(values, "depth map"), dtype=np.float64)
    if kind == "inverse":
        return x.astype(np.float32)
    ok = np.isfinite(x) & (x > 0)
    out = np.zeros_like(x)
    np.divide(1.0, x, out=out, where=ok)
    return out.astype(np.float32)


def load_depth_map(path: str | os.PathLike) -> np.ndarray:
    """Read a ``.npy``, ``.pfm`` or ``.png`` (16- or 8-bit grayscale) map as H x W float32."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            a = np.load(path, allow_pickle=False)
        elif suffix == ".pfm":
            a = read_pfm(path)
            if a.ndim == 3:
                a = a[..., 0]
        elif suffix == ".png":
            with Image.open(path) as im:
                if im.mode not in ("I;16", "I;16B", "I;16L", "I", "L", "F"):
                    raise UnreadableDepth(f"{path.name}: a depth PNG must be 16-bit or 8-bit grayscale, not {im.mode}")
                a = np.array(im)
        else:
            raise UnreadableDepth(f"{path.name}: unsupported depth file type (use .npy, .pfm or .png)")
        return np.asarray(as_map(a, f"depth map {path.name}"), dtype=np.float32)
    except UnreadableDepth:
        raise
    except (OSError, ValueError) as e:
        raise UnreadableDepth(
            f"{path.name}: cannot read depth map ({type(e).__name__}: {e})".replace("\n", " ")
        ) from None


class DepthDir:
    """Precomputed maps ``<stem>.npy`` / ``.pfm`` / ``.png`` in ``folder`` (first found, in that order)."""

    def __init__(self, folder: str | os.PathLike, kind: str = "inverse"):
        self.folder = Path(folder)
        self.kind = check_kind(kind)

    def describe(self) -> dict:
        return {"type": "depth-dir", "path": str(self.folder), "kind": self.kind}

    def path_for(self, stem: str) -> Path | None:
        for suffix in DEPTH_SUFFIXES:
            p = self.folder / f"{stem}{suffix}"
            if p.is_file():
                return p
        return None

    def __call__(self, stem: str, image: np.ndarray) -> np.ndarray:
        path = self.path_for(stem)
        if path is None:
            raise MissingDepth(f"no depth map {stem}.npy/.pfm/.png in {self.folder}")
        values = to_inverse_depth(load_depth_map(path), self.kind)
        return resize_map(values, *image.shape[:2])


def model_output_kind(config: Any) -> str | None:
    """``"depth"`` (metric) or ``"inverse"`` (relative) for a transformers depth model's config; None if unknown."""
    estimation = getattr(config, "depth_estimation_type", None)
    if estimation == "metric":
        return "depth"
    if estimation == "relative":
        return "inverse"
    model_type = getattr(config, "model_type", None)
    if model_type in METRIC_MODEL_TYPES:
        return "depth"
    if model_type in RELATIVE_MODEL_TYPES:
        return "inverse"
    return None


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


class DepthModel:
    """A ``transformers`` depth-estimation model (folder or hub id), loaded on first use.

    Args:
        model: a folder with ``config.json``, weights and ``preprocessor_config.json``, or a
            hub id (read from the local cache when ``HF_HUB_OFFLINE=1``).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; default CUDA when available.
        dtype: ``"fp32"``, ``"fp16"`` or ``"bf16"``; default fp16 on CUDA, fp32 on CPU.
        kind: ``"inverse"`` or ``"depth"`` to override :func:`model_output_kind`.

    The loaded model is not pickled: a copy sent to a worker process loads its own.
    """

    def __init__(
        self, model: str | os.PathLike, device: str | None = None, dtype: str | None = None, kind: str | None = None
    ):
        self.model_id = str(model)
        self.device = device
        self.dtype = dtype
        self._kind = check_kind(kind) if kind is not None else None
        self._loaded: tuple[Any, Any] | None = None
        self._config = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_loaded"] = None
        return state

    def describe(self) -> dict:
        return {"type": "depth-model", "model": self.model_id, "kind": self.kind}

    def _load_config(self):
        if self._config is None:
            from transformers import AutoConfig  # noqa: PLC0415 - deferred: ~1.4 s to import; only --depth-model needs it

            try:
                self._config = AutoConfig.from_pretrained(self.model_id, local_files_only=_offline())
            except Exception as e:  # OSError, ValueError, EnvironmentError from the hub client
                reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise ModelLoadError(
                    f"cannot load depth model '{self.model_id}' ({reason[:200]}); pass a folder with "
                    f"config.json, weights and preprocessor_config.json, or a hub id that is cached locally"
                ) from None
        return self._config

    @property
    def kind(self) -> str:
        """``"inverse"`` or ``"depth"``: what the model outputs (raises if it cannot tell)."""
        if self._kind is None:
            config = self._load_config()
            kind = model_output_kind(config)
            if kind is None:
                raise ModelLoadError(
                    f"cannot tell whether depth model '{self.model_id}' (model_type "
                    f"'{getattr(config, 'model_type', '?')}') outputs depth or inverse depth; pass --depth-kind inverse|depth"
                )
            self._kind = kind
        return self._kind

    def load(self) -> tuple[Any, Any]:
        """Load (once) and return ``(image_processor, model)``."""
        if self._loaded is None:
            import torch  # noqa: PLC0415 - deferred: ~0.9 s to import; only --depth-model needs it
            from transformers import (  # noqa: PLC0415 - deferred: ~3 s to import; only --depth-model needs it
                AutoImageProcessor,
                AutoModelForDepthEstimation,
            )

            self._load_config()
            _ = self.kind
            device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
            dtype_name = self.dtype or ("fp16" if str(device).startswith("cuda") else "fp32")
            dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype_name]
            try:
                processor = AutoImageProcessor.from_pretrained(self.model_id, local_files_only=_offline())
                model = AutoModelForDepthEstimation.from_pretrained(self.model_id, local_files_only=_offline())
            except Exception as e:
                reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise ModelLoadError(
                    f"cannot load depth model '{self.model_id}' ({reason[:200]}); check the folder or hub id"
                ) from None
            model = model.to(device=device, dtype=dtype).eval()
            self._loaded = (processor, model)
        return self._loaded

    def __call__(self, stem: str, image: np.ndarray) -> np.ndarray:
        import torch  # noqa: PLC0415 - deferred: ~0.9 s to import; only --depth-model needs it

        processor, model = self.load()
        height, width = image.shape[:2]
        inputs = processor(images=Image.fromarray(image), return_tensors="pt")
        parameter = next(model.parameters())
        inputs = {
            k: (
                v.to(device=parameter.device, dtype=parameter.dtype)
                if torch.is_floating_point(v)
                else v.to(parameter.device)
            )
            for k, v in inputs.items()
        }
        with torch.inference_mode():
            outputs = model(**inputs)
        predicted = None
        post = getattr(processor, "post_process_depth_estimation", None)
        if post is not None:
            outputs.predicted_depth = outputs.predicted_depth.float()
            kwargs: dict[str, Any] = {"target_sizes": [(height, width)]}
            if "source_sizes" in inspect.signature(post).parameters:
                kwargs["source_sizes"] = [(height, width)]
            try:
                predicted = post(outputs, **kwargs)[0]["predicted_depth"]
            except Exception:  # an older or unusual processor: resize ourselves below
                predicted = None
        if predicted is None:
            depth = outputs.predicted_depth.float()
            if depth.ndim == 3:
                depth = depth[:, None]
            predicted = torch.nn.functional.interpolate(
                depth, size=(height, width), mode="bicubic", align_corners=False
            )[0, 0]
        values = predicted.detach().float().cpu().numpy()
        return resize_map(to_inverse_depth(values, self.kind), height, width)
