"""The one way to load a model: a name, a folder or a hub id -> a folder in diffusers layout.

``resolve_model(model, layout)`` takes one of two layouts: ``"sd"`` (a text-to-image Stable
Diffusion model, the default) or ``"view"`` (a view-conditioned Zero-1-to-3 model, in the layout of
diffusers' community ``Zero1to3StableDiffusionPipeline``: :mod:`dream3d.diffusion.zero123`). It accepts
- ``None``: the layout's bundled prior (``"shapes"``, ``"shapes-view"``); either name too;
- a folder holding a model of that layout (``model_index.json`` and the components of
  :data:`LAYOUTS`: for ``"sd"`` ``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``,
  ``scheduler/``; for ``"view"`` ``unet/``, ``vae/``, ``image_encoder/``, ``cc_projection/``,
  ``feature_extractor/``, ``scheduler/``);
- a Hugging Face hub id such as ``stabilityai/stable-diffusion-2-1-base`` or ``kxic/zero123-165000``,
  fetched into (or, with ``HF_HUB_OFFLINE=1``, read from) the usual Hugging Face cache
  (``HF_HOME`` / ``HF_HUB_CACHE``).

A model made by dream3d may take a camera (a camera-conditioned prior): its UNet has diffusers'
``"projection"`` class embedding of :data:`~dream3d.cameras.CAMERA_FEATURES`, and ``camera.json``
beside ``model_index.json`` lists those features (:func:`takes_camera`).

Every failure is a :class:`~dream3d.errors.ModelLoadError` with a one-line message.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from ..cameras import CAMERA_FEATURES
from ..errors import ModelLoadError

SD_COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
VIEW_COMPONENTS = ("unet", "vae", "image_encoder", "cc_projection", "feature_extractor", "scheduler")
LAYOUTS = {"sd": SD_COMPONENTS, "view": VIEW_COMPONENTS}
LAYOUT_NAMES = {"sd": "a Stable Diffusion model", "view": "a Zero-1-to-3 (view-conditioned) model"}
CAMERA_FILE = "camera.json"
BUNDLED = {"shapes": "shapes", "shapes-view": "shapes-view"}  # name -> folder under dream3d/priors/
BUNDLED_LAYOUT = {"shapes": "sd", "shapes-view": "view"}
DEFAULT_BUNDLED = {"sd": "shapes", "view": "shapes-view"}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def bundled_prior_path(name: str = "shapes") -> Path:
    """Folder of a bundled prior (it may not exist if the package was installed without it)."""
    return Path(__file__).resolve().parent.parent / "priors" / BUNDLED[name]


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def resolve_model(model: str | os.PathLike | None, layout: str = "sd") -> Path:
    """A local folder in diffusers layout for ``model`` (see the module docstring)."""
    if layout not in LAYOUTS:
        raise ModelLoadError(f"unknown model layout '{layout}'; use one of {', '.join(LAYOUTS)}")
    if model is None or str(model) in BUNDLED:
        name = DEFAULT_BUNDLED[layout] if model is None else str(model)
        if BUNDLED_LAYOUT[name] != layout:
            raise ModelLoadError(
                f"the bundled '{name}' prior is {LAYOUT_NAMES[BUNDLED_LAYOUT[name]]}, not "
                f"{LAYOUT_NAMES[layout]}; use --model {DEFAULT_BUNDLED[layout]}"
            )
        path = bundled_prior_path(name)
        if not (path / "model_index.json").is_file():
            train = "dream3d prior train" + (" --kind view" if layout == "view" else "")
            raise ModelLoadError(
                f"the bundled '{name}' prior is not installed at {path}; rebuild it with "
                f"'{train} -o {path}' or pass --model FOLDER_OR_HUB_ID"
            )
        return path
    text = str(model)
    path = Path(text).expanduser()
    if path.exists():
        check_layout(path, layout)
        return path
    if HUB_ID.match(text) and not text.startswith((".", "/", "~")):
        return _from_hub(text, layout)
    example = "stabilityai/stable-diffusion-2-1-base" if layout == "sd" else "kxic/zero123-165000"
    raise ModelLoadError(
        f"model path '{text}' does not exist; pass a folder in diffusers layout, a hub id such as "
        f"{example}, or '{DEFAULT_BUNDLED[layout]}' for the bundled prior"
    )


def check_layout(path: Path, layout: str = "sd") -> None:
    """Raise a one-line :class:`ModelLoadError` unless ``path`` holds a model of ``layout``."""
    if not path.is_dir():
        raise ModelLoadError(f"model path '{path}' is a file; pass the folder that holds model_index.json")
    missing = [c for c in LAYOUTS[layout] if not (path / c).is_dir()]
    if missing or not (path / "model_index.json").is_file():
        what = ", ".join(missing + ([] if (path / "model_index.json").is_file() else ["model_index.json"]))
        other = next((k for k in LAYOUTS if k != layout and all((path / c).is_dir() for c in LAYOUTS[k])), None)
        hint = (
            f"it looks like {LAYOUT_NAMES[other]}"
            if other
            else "point --model at the folder that holds model_index.json"
        )
        raise ModelLoadError(f"'{path}' is not {LAYOUT_NAMES[layout]} in diffusers layout (missing {what}); {hint}")


def _from_hub(repo_id: str, layout: str = "sd") -> Path:
    offline = hub_offline()
    try:
        if layout == "sd":
            from diffusers import DiffusionPipeline  # noqa: PLC0415 - deferred: ~4 s to import; only hub ids need it, not `dream3d prior path`

            folder = DiffusionPipeline.download(repo_id, local_files_only=offline)
        else:  # a community pipeline: fetch its components' folders only (no pipeline code, no safety checker)
            from huggingface_hub import snapshot_download  # noqa: PLC0415 - deferred as above

            patterns = ["model_index.json", "view.json"] + [f"{c}/*" for c in LAYOUTS[layout]]
            folder = snapshot_download(repo_id, allow_patterns=patterns, local_files_only=offline)
    except Exception as e:  # huggingface_hub raises many types; all mean "could not get it"
        if offline:
            raise ModelLoadError(
                f"model '{repo_id}' is not in the local Hugging Face cache and HF_HUB_OFFLINE=1 is set; "
                f"download it once with network access (unset HF_HUB_OFFLINE) or pass a local folder"
            ) from None
        reason = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise ModelLoadError(
            f"could not fetch '{repo_id}' from the Hugging Face hub ({reason}); check the id and your "
            f"network, or pass a local folder"
        ) from None
    path = Path(folder)
    check_layout(path, layout)
    return path


def takes_camera(folder: str | os.PathLike, unet_config) -> bool:
    """Whether the model in ``folder`` (with UNet config ``unet_config``) takes a camera."""
    path = Path(folder) / CAMERA_FILE
    embed = unet_config.get("class_embed_type") or unet_config.get("num_class_embeds")
    if not path.is_file():
        if embed:
            raise ModelLoadError(
                f"the UNet of '{folder}' has class embeddings of an unknown kind ({embed}); dream3d loads "
                f"text-to-image models and its own camera-conditioned ones (with {CAMERA_FILE})"
            )
        return False
    features = json.loads(path.read_text()).get("features")
    if features != list(CAMERA_FEATURES) or unet_config.get("projection_class_embeddings_input_dim") != len(features):
        raise ModelLoadError(
            f"'{path}' lists camera features {features} but this dream3d gives {list(CAMERA_FEATURES)} to a "
            f"'projection' class embedding of that size; use a model made by this version"
        )
    return True
