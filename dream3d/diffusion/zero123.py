"""Zero-1-to-3: a latent diffusion model that renders an object from a new viewpoint, given one
image of it and the relative camera (Liu et al. 2023, "Zero-1-to-3: Zero-shot One Image to 3D Object").

**Layout** (diffusers' community ``Zero1to3StableDiffusionPipeline``, e.g. hub ``kxic/zero123-165000``):
``model_index.json``; ``vae/`` (``AutoencoderKL``); ``image_encoder/`` (transformers'
``CLIPVisionModelWithProjection``); ``unet/`` (``UNet2DConditionModel`` with **2 x latent channels**
in: the noisy latents, then the conditioning image's latents); ``cc_projection/`` (:class:`CCProjection`,
a Linear from the image embedding + 4 camera numbers to the UNet's cross-attention width: 772 -> 768
for the public models); ``feature_extractor/`` (``CLIPImageProcessor``'s config); ``scheduler/``.
dream3d adds ``view.json``: the camera encoding's ``variant``, the ``object_fraction`` its
conditioning images were framed to (:func:`dream3d.diffusion.framing.frame_object`) and the
``image_size``. A model without ``view.json`` (a public checkpoint) is read as ``variant="zero123"``,
``object_fraction`` :data:`PUBLIC_OBJECT_FRACTION`.

**Conditioning** (:meth:`ViewDiffusion.image_conditioning`): the CLIP image embedding of the
conditioning image (``image_embeds``, after the feature extractor's resize and normalisation, done in
torch), concatenated with the relative camera (:func:`encode_relative_camera`) and passed through
``cc_projection`` -> the UNet's cross-attention states ``(B, 1, D)``; and the VAE posterior's
**mode, unscaled** (not times ``scaling_factor``, as Zero-1-to-3 does) of the conditioning image,
concatenated to the noisy latents. The unconditional branch of classifier-free guidance zeroes both
(the projected embedding and the conditioning latents), as the public pipeline and threestudio do.

**The bundled view prior** ``shapes-view`` (``dream3d prior train --kind view``, ``docs/prior.md``) is
this layout at 32 px on the shapes world.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import diffusers
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from ..errors import ModelLoadError, UserError
from ..io import ensure_writable_dir, write_json
from .build import LatentModelSpec, build_noise_schedule, build_unet, build_vae, drop_source_paths
from .core import LatentSpace, _quiet_loading

VARIANTS = ("zero123", "stable-zero123")
CAMERA_DIMS = 4
VIEW_FILE = "view.json"
PUBLIC_OBJECT_FRACTION = 0.8  # threestudio's image preprocessing (border ratio 0.2) for public checkpoints
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP's normalisation (CLIPImageProcessor's default)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
PIPELINE_CLASS = "Zero1to3StableDiffusionPipeline"


class CCProjection(ModelMixin, ConfigMixin):
    """The camera-conditioned projection of Zero-1-to-3: ``Linear(in_channel -> out_channel)`` on
    the image embedding concatenated with the 4 camera numbers. Config keys and parameter name
    (``projection``) are those of the public checkpoints, so their ``cc_projection/`` loads."""

    @register_to_config
    def __init__(self, in_channel: int = 772, out_channel: int = 768):
        super().__init__()
        self.in_channel = in_channel
        self.out_channel = out_channel
        self.projection = torch.nn.Linear(in_channel, out_channel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(x)


def encode_relative_camera(
    d_elevation_deg,
    d_azimuth_deg,
    d_distance=0.0,
    cond_elevation_deg=None,
    variant: str = "zero123",
) -> torch.Tensor:
    """The 4 camera numbers of Zero-1-to-3 for target views relative to the conditioning view -> (B, 4).

    The deltas are *target minus conditioning view* in the project's convention
    (``docs/cameras.md``: elevation above the XY plane, azimuth counter-clockwise from +X towards +Y,
    as threestudio's; Zero-1-to-3's renders measure azimuth the same way). Zero-1-to-3 uses the polar
    angle ``90 - elevation``, so its first number is ``d_polar = deg2rad(-d_elevation)``:

    - ``variant="zero123"``: ``[d_polar (rad), sin(d_azimuth), cos(d_azimuth), d_distance]``;
    - ``variant="stable-zero123"``: the 4th number is the conditioning view's absolute polar angle
      ``deg2rad(90 - cond_elevation_deg)`` instead (Stable Zero123, as threestudio's
      ``stable_zero123_guidance`` encodes it); ``cond_elevation_deg`` is then required.

    Arguments broadcast against each other (numbers, sequences or tensors, degrees).
    """
    if variant not in VARIANTS:
        raise UserError(f"unknown camera variant '{variant}'; use one of {', '.join(VARIANTS)}")

    def as_tensor(v):
        return torch.as_tensor(v, dtype=torch.float64).reshape(-1)

    de, da, dd = as_tensor(d_elevation_deg), as_tensor(d_azimuth_deg), as_tensor(d_distance)
    if variant == "stable-zero123":
        if cond_elevation_deg is None:
            raise UserError("the stable-zero123 camera encoding needs the conditioning view's elevation")
        fourth = torch.deg2rad(90.0 - as_tensor(cond_elevation_deg))
    else:
        fourth = dd
    de, da, fourth = torch.broadcast_tensors(de, da, fourth)
    az = torch.deg2rad(da)
    return torch.stack([torch.deg2rad(-de), torch.sin(az), torch.cos(az), fourth], dim=-1).float()


def relative_camera(cond, targets, variant: str = "zero123") -> torch.Tensor:
    """:func:`encode_relative_camera` from absolute cameras: ``cond`` = (elevation, azimuth,
    distance) of the conditioning view, ``targets`` = (elevations, azimuths, distances) of the
    target views (each a number or a sequence); degrees and world units."""
    ce, ca, cd = (torch.as_tensor(v, dtype=torch.float64).reshape(-1) for v in cond)
    te, ta, td = (torch.as_tensor(v, dtype=torch.float64).reshape(-1) for v in targets)
    return encode_relative_camera(te - ce, ta - ca, td - cd, cond_elevation_deg=ce, variant=variant)


@dataclass
class ViewModelSpec(LatentModelSpec):
    """Sizes of a Zero-1-to-3 model. The defaults are a tiny model for tests (32 px, ~0.3 M parameters)."""

    beta_start: float = 0.0001  # DDPM's linear schedule and v-prediction, as the bundled text prior (docs/prior.md)
    beta_end: float = 0.02
    beta_schedule: str = "linear"
    prediction_type: str = "v_prediction"
    clip_hidden: int = 32
    clip_layers: int = 1
    clip_heads: int = 2
    clip_patch: int = 8
    clip_image_size: int | None = None  # None: image_size
    embed_dim: int = 32  # the CLIP projection's width = the UNet's cross-attention width


def build_view_model(spec: ViewModelSpec | None = None, vae: AutoencoderKL | None = None, seed: int = 0) -> dict:
    """Fresh ``vae`` (or the given one), ``image_encoder``, ``feature_extractor`` (a config dict),
    ``cc_projection``, ``unet`` and ``scheduler`` of ``spec`` (default: tiny)."""
    spec = spec or ViewModelSpec()
    torch.manual_seed(seed)  # diffusers/transformers initialise weights from the global generator
    if vae is None:
        vae = build_vae(spec)
    elif vae.config.latent_channels != spec.latent_channels:
        raise UserError(
            f"the given VAE has {vae.config.latent_channels} latent channels but the spec asks for "
            f"{spec.latent_channels}; set latent_channels to match"
        )
    clip_size = spec.clip_image_size or spec.image_size
    image_encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=spec.clip_hidden,
            intermediate_size=4 * spec.clip_hidden,
            num_hidden_layers=spec.clip_layers,
            num_attention_heads=spec.clip_heads,
            image_size=clip_size,
            patch_size=spec.clip_patch,
            projection_dim=spec.embed_dim,
        )
    )
    cc_projection = CCProjection(in_channel=spec.embed_dim + CAMERA_DIMS, out_channel=spec.embed_dim)
    unet = build_unet(spec, spec.embed_dim, in_channels=2 * spec.latent_channels)
    return {
        "vae": vae,
        "image_encoder": image_encoder,
        "feature_extractor": feature_extractor_config(clip_size),
        "cc_projection": cc_projection,
        "unet": unet,
        "scheduler": build_noise_schedule(spec),
    }


def feature_extractor_config(size: int) -> dict:
    """``CLIPImageProcessor``'s ``preprocessor_config.json`` for ``size`` px (written as JSON, so that
    nothing imports transformers' image processors, which want torchvision)."""
    return {
        "crop_size": {"height": size, "width": size},
        "do_center_crop": True,
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": list(CLIP_MEAN),
        "image_processor_type": "CLIPImageProcessor",
        "image_std": list(CLIP_STD),
        "resample": 3,
        "rescale_factor": 1 / 255,
        "size": {"shortest_edge": size},
    }


def save_view_model(
    components: dict, folder: str | Path, variant: str = "zero123", object_fraction: float = PUBLIC_OBJECT_FRACTION
) -> Path:
    """Write ``components`` (:func:`build_view_model`'s keys) in the Zero-1-to-3 layout (safetensors),
    with ``model_index.json`` and dream3d's ``view.json``."""
    if variant not in VARIANTS:
        raise UserError(f"unknown camera variant '{variant}'; use one of {', '.join(VARIANTS)}")
    folder = ensure_writable_dir(folder)
    with _quiet_loading():
        for name in ("vae", "image_encoder", "unet", "cc_projection"):
            components[name].save_pretrained(folder / name, safe_serialization=True)
    drop_source_paths(folder)
    components["scheduler"].save_pretrained(folder / "scheduler")
    fe = components["feature_extractor"]
    write_json(folder / "feature_extractor" / "preprocessor_config.json", fe if isinstance(fe, dict) else fe.to_dict())
    index = {
        "_class_name": PIPELINE_CLASS,
        "_diffusers_version": diffusers.__version__,
        "cc_projection": ["pipeline_zero1to3", "CCProjection"],
        "feature_extractor": ["transformers", "CLIPImageProcessor"],
        "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", type(components["scheduler"]).__name__],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    write_json(
        folder / VIEW_FILE,
        {
            "variant": variant,
            "object_fraction": object_fraction,
            "image_size": int(components["unet"].config.sample_size)
            * 2 ** (len(components["vae"].config.block_out_channels) - 1),
        },
    )
    write_json(folder / "model_index.json", index)  # last: a folder with it is complete
    return folder


def read_view_facts(folder: str | Path) -> dict:
    """``view.json`` of a model folder, or the public checkpoints' facts when it has none."""
    path = Path(folder) / VIEW_FILE
    facts = {"variant": "zero123", "object_fraction": PUBLIC_OBJECT_FRACTION, "image_size": None}
    if path.is_file():
        facts.update(json.loads(path.read_text()))
    if facts["variant"] not in VARIANTS:
        raise ModelLoadError(
            f"'{path}' names camera variant '{facts['variant']}'; this dream3d knows {', '.join(VARIANTS)}"
        )
    return facts


class ClipPreprocess:
    """What ``CLIPImageProcessor`` (config ``feature_extractor``: a ``preprocessor_config.json`` dict)
    does to images in [0, 1], in torch and differentiable: resize the shortest side to ``size``
    (bicubic, anti-aliased), centre-crop to ``crop_size``, normalise by ``image_mean``/``image_std``.
    Training and inference both use it."""

    def __init__(self, feature_extractor: dict):
        fe = feature_extractor
        crop = fe.get("crop_size", 224)
        self.crop = (crop["height"], crop["width"]) if isinstance(crop, dict) else (crop, crop)
        size = fe.get("size", self.crop[0])
        self.shortest_edge = size.get("shortest_edge", min(self.crop)) if isinstance(size, dict) else size
        self.mean = torch.tensor(fe.get("image_mean", CLIP_MEAN)).reshape(1, 3, 1, 1)
        self.std = torch.tensor(fe.get("image_std", CLIP_STD)).reshape(1, 3, 1, 1)

    def to(self, device) -> ClipPreprocess:
        self.mean, self.std = self.mean.to(device), self.std.to(device)
        return self

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float()
        h, w = x.shape[-2:]
        scale = self.shortest_edge / min(h, w)
        nh, nw = max(self.crop[0], round(h * scale)), max(self.crop[1], round(w * scale))
        if (nh, nw) != (h, w):
            x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)
        top, left = (nh - self.crop[0]) // 2, (nw - self.crop[1]) // 2
        x = x[..., top : top + self.crop[0], left : left + self.crop[1]]
        return (x - self.mean.to(x.device)) / self.std.to(x.device)


def project_camera(cc_projection: CCProjection, image_embeds: torch.Tensor, camera: torch.Tensor) -> torch.Tensor:
    """The UNet's cross-attention states (B, 1, D): ``cc_projection`` of the CLIP image embedding
    (B, D) concatenated with the camera's 4 numbers (B, 4)."""
    x = torch.cat([image_embeds[:, None], camera[:, None].to(image_embeds.dtype)], dim=-1)
    return cc_projection(x.to(cc_projection.dtype))


class ViewDiffusion(LatentSpace):
    """A Zero-1-to-3 model (the layout in the module docstring) and the operations that novel-view
    sampling and image-to-3D guidance need. Images are (B, 3, H, W) in [0, 1]; latents are scaled
    latents, as :class:`~dream3d.diffusion.core.LatentDiffusion`'s; cameras are
    :func:`encode_relative_camera` rows."""

    modules = ("vae", "image_encoder", "cc_projection", "unet")

    def __init__(
        self,
        vae,
        image_encoder,
        cc_projection,
        unet,
        scheduler_config: dict,
        device,
        dtype,
        source: str = "",
        feature_extractor: dict | None = None,
        variant: str = "zero123",
        object_fraction: float = PUBLIC_OBJECT_FRACTION,
    ):
        self.image_encoder = image_encoder
        self.cc_projection = cc_projection
        self.variant = variant
        self.object_fraction = object_fraction
        self.clip_preprocess = ClipPreprocess(
            feature_extractor or feature_extractor_config(image_encoder.config.image_size)
        )
        super().__init__(vae, unet, scheduler_config, device, dtype, source)
        latent = vae.config.latent_channels
        if unet.config.in_channels != 2 * latent or cc_projection.config.in_channel != (
            image_encoder.config.projection_dim + CAMERA_DIMS
        ):
            raise ModelLoadError(
                f"'{source}' is not a Zero-1-to-3 model: its UNet takes {unet.config.in_channels} channels "
                f"(want {2 * latent}) and its cc_projection {cc_projection.config.in_channel} numbers "
                f"(want {image_encoder.config.projection_dim + CAMERA_DIMS})"
            )

    layout = "view"
    what = "Zero-1-to-3 model"

    @classmethod
    def load_parts(cls, folder: Path, device, dtype, source: str) -> ViewDiffusion:
        """The model in ``folder`` (:meth:`~dream3d.diffusion.core.LatentSpace.from_pretrained`, with
        ``model=None`` the bundled ``shapes-view``, calls it)."""
        facts = read_view_facts(folder)
        unet, vae, scheduler_config = cls.load_latent_parts(folder, dtype)
        image_encoder = CLIPVisionModelWithProjection.from_pretrained(
            folder, subfolder="image_encoder", torch_dtype=dtype
        )
        cc_projection = CCProjection.from_pretrained(folder, subfolder="cc_projection", torch_dtype=dtype)
        fe_path = Path(folder) / "feature_extractor" / "preprocessor_config.json"
        feature_extractor = json.loads(fe_path.read_text()) if fe_path.is_file() else None
        return cls(
            vae,
            image_encoder,
            cc_projection,
            unet,
            scheduler_config,
            device,
            dtype,
            source,
            feature_extractor,
            facts["variant"],
            facts["object_fraction"],
        )

    def to(self, device) -> ViewDiffusion:
        super().to(device)
        self.clip_preprocess.to(self.device)
        return self

    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.latent_channels)

    def describe(self) -> dict:
        return {
            **super().describe(),
            "variant": self.variant,
            "object_fraction": self.object_fraction,
            "image_size": self.default_size,
        }

    def relative_camera(self, cond, targets) -> torch.Tensor:
        """:func:`relative_camera` in this model's variant."""
        return relative_camera(cond, targets, self.variant)

    # ------------------------------------------------------------------ conditioning
    def clip_pixels(self, images: torch.Tensor) -> torch.Tensor:
        """:class:`ClipPreprocess` of images in [0, 1] (differentiable), in the image encoder's dtype."""
        return self.clip_preprocess(images.to(self.device)).to(self.image_encoder.dtype)

    def image_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        """CLIP ``image_embeds`` (B, D) of images in [0, 1]."""
        return self.image_encoder(pixel_values=self.clip_pixels(images)).image_embeds

    def conditioning_latents(self, images: torch.Tensor) -> torch.Tensor:
        """The VAE posterior's mode, **unscaled**, of images in [0, 1] (resized to the model's size)."""
        x = images.to(device=self.device, dtype=self.vae.dtype)
        size = self.default_size
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return self.vae.encode(x * 2.0 - 1.0).latent_dist.mode()

    def image_conditioning(self, images: torch.Tensor, camera: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(embeddings (B, 1, D), cond_latents (B, C, h, w))`` for conditioning ``images`` seen from
        relative cameras ``camera`` (B, 4). One image with B cameras gives B rows. Differentiable."""
        camera = torch.as_tensor(camera).to(device=self.device).reshape(-1, CAMERA_DIMS)
        emb = self.image_embeddings(images)
        latents = self.conditioning_latents(images)
        n = max(len(emb), len(camera))
        if len(emb) != n:
            if len(emb) != 1:
                raise UserError(
                    f"got {len(emb)} conditioning images for {len(camera)} cameras; give one or the same number"
                )
            emb, latents = emb.expand(n, -1), latents.expand(n, -1, -1, -1)
        elif len(camera) != n:
            if len(camera) != 1:
                raise UserError(
                    f"got {len(camera)} cameras for {len(emb)} conditioning images; give one or the same number"
                )
            camera = camera.expand(n, -1)
        return project_camera(self.cc_projection, emb, camera), latents

    @staticmethod
    def unconditional(cond: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The unconditional branch: both the embeddings and the conditioning latents zeroed."""
        return torch.zeros_like(cond[0]), torch.zeros_like(cond[1])

    # ------------------------------------------------------------------ noise prediction
    def unet_forward(
        self, noisy: torch.Tensor, t, embeddings: torch.Tensor, cond_latents: torch.Tensor
    ) -> torch.Tensor:
        """The raw UNet output for scaled noisy latents and (unscaled) conditioning latents."""
        x = torch.cat([noisy, cond_latents.to(noisy.dtype)], dim=1).to(self.unet.dtype)
        return self.unet(x, t, encoder_hidden_states=embeddings.to(self.unet.dtype), return_dict=False)[0]

    def predict_noise(
        self,
        noisy: torch.Tensor,
        t: torch.Tensor | int,
        cond: tuple[torch.Tensor, torch.Tensor],
        guidance_scale: float = 3.0,
        guidance_rescale: float = 0.0,
    ) -> torch.Tensor:
        """Guided noise estimate at training timestep(s) ``t`` for ``cond`` (:meth:`image_conditioning`):
        ``uncond + s * (cond - uncond)`` (:func:`~dream3d.diffusion.core.cfg_combine`), both branches
        in one batch; ``guidance_scale == 1`` runs the conditional branch alone. v-prediction outputs
        are converted to epsilon after guidance (the conversion is linear)."""
        embeddings, latents = cond
        u_emb, u_lat = self.unconditional(cond)

        def forward(x, steps, doubled):
            if not doubled:
                return self.unet_forward(x, steps, embeddings, latents)
            return self.unet_forward(x, steps, torch.cat([u_emb, embeddings]), torch.cat([u_lat, latents]))

        return self.guided_epsilon(noisy, t, forward, guidance_scale != 1.0, guidance_scale, guidance_rescale)

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample(
        self,
        cond_image: torch.Tensor,
        camera: torch.Tensor,
        num_steps: int = 50,
        guidance_scale: float = 3.0,
        generator: torch.Generator | None = None,
        scheduler: str | None = "ddim",
        num_images: int = 1,
        eta: float = 0.0,
        output: str = "pt",
        progress: bool | Callable = False,
        guidance_rescale: float = 0.0,
    ):
        """Novel views of ``cond_image`` (B or 1, 3, H, W) in [0, 1], already framed
        (:func:`~dream3d.diffusion.framing.frame_object` with :attr:`object_fraction`), at relative
        cameras ``camera`` (B, 4) -> images (B * num_images, 3, size, size) in [0, 1]
        (``output="pt"``) or latents (``"latent"``). ``scheduler``: a name of
        :data:`~dream3d.diffusion.schedulers.SCHEDULERS` (default DDIM), ``None`` for the model's own."""
        if num_steps < 1:
            raise UserError(f"steps must be at least 1, got {num_steps}")
        if guidance_scale < 0:
            raise UserError(f"guidance scale must be >= 0, got {guidance_scale}")
        embeddings, cond_latents = self.image_conditioning(cond_image, camera)
        embeddings = embeddings.repeat_interleave(num_images, dim=0)
        cond_latents = cond_latents.repeat_interleave(num_images, dim=0)
        do_cfg = guidance_scale != 1.0
        if do_cfg:
            u_emb, u_lat = self.unconditional((embeddings, cond_latents))
            embeddings, cond_latents = torch.cat([u_emb, embeddings]), torch.cat([u_lat, cond_latents])
        size = self.default_size // self.vae_scale_factor
        shape = (len(cond_latents) // (2 if do_cfg else 1), self.latent_channels, size, size)

        def forward(model_in, t):
            return self.unet_forward(model_in, t, embeddings, cond_latents)

        cfg = (guidance_scale, guidance_rescale) if do_cfg else None
        latents = self.denoise(shape, embeddings.dtype, forward, generator, scheduler, num_steps, cfg, eta, progress)
        if output == "latent":
            return latents
        return self.decode_latents(latents)
