"""The latent diffusion core: one object that text-to-image and every guidance use.

:class:`LatentDiffusion` holds a Stable Diffusion model's parts (VAE, text encoder, tokenizer,
UNet, noise schedule) and exposes the operations that samplers and score distillation need:

- :meth:`encode_prompt` - text -> embeddings, negative prompts, an embedding cache;
- :meth:`encode_images` / :meth:`decode_latents` - differentiable VAE, images in [0, 1];
- :meth:`predict_noise` - classifier-free guided noise prediction (see :func:`cfg_combine`);
- :meth:`add_noise` / :meth:`predict_x0` - the forward process and its inversion at one step;
- :meth:`to_epsilon` / :meth:`training_target` - a model's output as noise, and what it learns;
- :meth:`sample` - the text-to-image loop, bit-compatible with diffusers'
  ``StableDiffusionPipeline`` on the CPU for the same generator.

Conventions: images are float tensors (B, 3, H, W) in [0, 1]; latents are *scaled* latents (the
VAE's latent times ``vae.config.scaling_factor``), as the UNet sees them; ``t`` is an integer
training timestep in [0, num_train_timesteps).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from diffusers.utils import logging as dlog
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image
from tqdm.auto import tqdm
from transformers import CLIPTextModel, CLIPTokenizer
from transformers.utils import logging as tlog

from ..errors import UserError
from .devices import dtype_name, resolve_device, resolve_dtype
from .loading import DEFAULT_BUNDLED, resolve_model, takes_camera
from .schedulers import make_scheduler


@contextlib.contextmanager
def _quiet_loading():
    """No "Loading weights" progress bars from transformers/diffusers while a model loads."""
    was_t, was_d = tlog.is_progress_bar_enabled(), dlog.is_progress_bar_enabled()
    tlog.disable_progress_bar()
    dlog.disable_progress_bar()
    try:
        yield
    finally:
        if was_t:
            tlog.enable_progress_bar()
        if was_d:
            dlog.enable_progress_bar()


@contextlib.contextmanager
def loading_parts(folder, what: str):
    """Load a model's parts quietly; a part that fails to load becomes one :class:`UserError` line
    that names the ``folder`` and ``what`` a complete model is ("SD model")."""
    try:
        with _quiet_loading():
            yield
    except (OSError, ValueError, KeyError) as e:
        reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise UserError(
            f"could not load the model in '{folder}' ({reason}); check that it is a complete {what}"
        ) from None


def cfg_combine(noise_uncond: torch.Tensor, noise_cond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance, diffusers' convention: ``uncond + scale * (cond - uncond)``.

    ``scale = 1`` is the conditional prediction alone; ``scale = 0`` the unconditional one.
    threestudio uses the same formula, so its SDS ``guidance_scale: 100`` is ``scale = 100`` here.
    DreamFusion's paper writes ``(1 + w) * cond - w * uncond``: its ``w = 100`` is ``scale = 101``.
    """
    return noise_uncond + scale * (noise_cond - noise_uncond)


def cfg_rescale(guided: torch.Tensor, cond: torch.Tensor, rescale: float) -> torch.Tensor:
    """Guidance rescale (Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps are
    Flawed", section 3.4): mix the guided model output with itself scaled to the conditional
    output's per-sample standard deviation, by ``rescale`` (0: unchanged; the paper uses 0.7).

    Strong guidance over-saturates colours, most of all for v-prediction models; when sampling
    from noise this pulls them back (the bundled prior's eval, ``docs/prior.md``), though in the
    denoised target it made the colour drift worse (``docs/benchmarks.md``). It is the formula of diffusers' ``rescale_noise_cfg`` (``StableDiffusionPipeline``'s
    ``guidance_rescale``, applied to the model's raw output, v for a v-prediction model),
    written here because that function's module imports transformers' image processors
    (``tests/test_diffusion_core.py`` checks the two agree).
    """
    if rescale == 0:
        return guided
    dims = list(range(1, guided.ndim))
    rescaled = guided * (cond.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True))
    return rescale * rescaled + (1 - rescale) * guided


class LatentSpace:
    """The latent space and noise schedule of a latent diffusion model: what every core on a VAE and
    a DDPM-style schedule shares (:class:`LatentDiffusion` here, ``ViewDiffusion`` in
    :mod:`dream3d.diffusion.zero123`). Subclasses set ``self.modules`` (every ``nn.Module`` they hold)
    before calling ``__init__``; it freezes them."""

    modules: tuple[str, ...] = ("vae", "unet")

    def __init__(self, vae, unet, scheduler_config: dict, device, dtype, source: str = ""):
        self.vae = vae
        self.unet = unet
        self.scheduler_config = dict(scheduler_config)
        self.device = device
        self.dtype = dtype
        self.source = source
        for name in self.modules:
            module = getattr(self, name)
            module.requires_grad_(False)
            module.eval()
        self.noise_scheduler = make_scheduler("ddpm", self.scheduler_config)  # the training schedule: betas, add_noise
        self.alphas_cumprod = self.noise_scheduler.alphas_cumprod.to(device=device, dtype=torch.float32)

    layout = "sd"  # the model layout (dream3d.diffusion.loading.LAYOUTS)
    what = "SD model"  # a complete one, in load errors

    @classmethod
    def from_pretrained(
        cls,
        model: str | Path | None = None,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
    ):
        """Load from the layout's bundled prior (``None``: ``"shapes"`` for text-to-image,
        ``"shapes-view"`` for a view model), a folder or a hub id (:func:`~dream3d.diffusion.loading.resolve_model`)."""
        dev = resolve_device(device)
        dt = resolve_dtype(dtype, dev)
        folder = resolve_model(model, layout=cls.layout)
        with loading_parts(folder, cls.what):
            obj = cls.load_parts(folder, dev, dt, str(model or DEFAULT_BUNDLED[cls.layout]))
        obj.to(dev)
        return obj

    @classmethod
    def load_parts(cls, folder: Path, device, dtype, source: str) -> LatentSpace:
        raise NotImplementedError

    @staticmethod
    def load_latent_parts(folder, dtype) -> tuple:
        """``(unet, vae, scheduler_config)`` of the diffusers-layout model in ``folder``."""
        unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", torch_dtype=dtype)
        vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", torch_dtype=dtype)
        return unet, vae, dict(DDPMScheduler.load_config(folder, subfolder="scheduler"))

    def to(self, device):
        self.device = torch.device(device)
        for name in self.modules:
            getattr(self, name).to(self.device)
        self.alphas_cumprod = self.alphas_cumprod.to(self.device)
        return self

    # ------------------------------------------------------------------ facts
    def describe(self) -> dict:
        """What a run's record says about the model."""
        return {"model": self.source, "device": str(self.device), "dtype": dtype_name(self.dtype)}

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def default_size(self) -> int:
        return int(self.unet.config.sample_size) * self.vae_scale_factor

    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler_config.get("num_train_timesteps", 1000))

    @property
    def prediction_type(self) -> str:
        return self.scheduler_config.get("prediction_type", "epsilon")

    # ------------------------------------------------------------------ VAE
    def encode_images(
        self, images: torch.Tensor, generator: torch.Generator | None = None, sample: bool = False
    ) -> torch.Tensor:
        """Images (B, 3, H, W) in [0, 1] -> scaled latents. Differentiable.

        ``sample=False`` takes the posterior mean (deterministic, what SDS uses); ``sample=True``
        draws from the posterior with ``generator``.
        """
        x = images.to(device=self.device, dtype=self.vae.dtype) * 2.0 - 1.0
        posterior = self.vae.encode(x).latent_dist
        z = posterior.sample(generator=generator) if sample else posterior.mean
        return z * self.vae.config.scaling_factor

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> images (B, 3, H, W) in [0, 1]. Differentiable."""
        x = self.vae.decode(latents.to(self.vae.dtype) / self.vae.config.scaling_factor).sample
        return (x / 2 + 0.5).clamp(0, 1)

    # ------------------------------------------------------------------ noise
    def _abar(self, t: torch.Tensor | int, like: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, device=self.device).long().reshape(-1)
        abar = self.alphas_cumprod[t].to(like.dtype)
        return abar.reshape(-1, *([1] * (like.ndim - 1)))

    def add_noise(self, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """Forward process ``sqrt(abar_t) * x0 + sqrt(1 - abar_t) * noise`` (the scheduler's ``add_noise``)."""
        t = torch.as_tensor(t, device=latents.device).long().reshape(-1)
        return self.noise_scheduler.add_noise(latents, noise, t)

    def predict_x0(self, noisy: torch.Tensor, eps: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """One-step estimate of the clean latent: ``(x_t - sqrt(1 - abar_t) * eps) / sqrt(abar_t)``."""
        abar = self._abar(t, noisy)
        return (noisy - (1 - abar).sqrt() * eps) / abar.sqrt()

    def to_epsilon(self, model_output: torch.Tensor, noisy: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """The UNet's output as a noise estimate, whatever the model predicts (epsilon or v)."""
        if self.prediction_type == "epsilon":
            return model_output
        if self.prediction_type == "v_prediction":
            abar = self._abar(t, noisy)
            return abar.sqrt() * model_output + (1 - abar).sqrt() * noisy
        raise UserError(f"prediction type '{self.prediction_type}' is not supported; use an epsilon or v model")

    def training_target(self, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the UNet learns to predict for clean ``latents`` noised with ``noise`` at ``t``
        (its diffusion loss's target): the noise, or the velocity of a v-prediction model."""
        if self.prediction_type == "epsilon":
            return noise
        if self.prediction_type == "v_prediction":
            return self.noise_scheduler.get_velocity(latents, noise, t)
        raise UserError(f"prediction type '{self.prediction_type}' is not supported; use an epsilon or v model")

    def guided_epsilon(
        self, noisy: torch.Tensor, t, forward: Callable, do_cfg: bool, guidance_scale: float, guidance_rescale: float
    ) -> torch.Tensor:
        """The guided noise estimate at training timestep(s) ``t``: ``forward(x, t, doubled)`` is the
        UNet's raw output for ``x`` (``doubled``: the unconditional then the conditional batch, run
        as one, as diffusers does); the two halves combine with :func:`cfg_combine` then
        :func:`cfg_rescale`, and v-prediction is converted to epsilon after guidance (linear)."""
        t = torch.as_tensor(t, device=self.device)
        if t.ndim == 0:
            t = t.expand(noisy.shape[0])
        if not do_cfg:
            return self.to_epsilon(forward(noisy, t, False).to(noisy.dtype), noisy, t)
        out = forward(torch.cat([noisy, noisy]), torch.cat([t, t]), True)
        out_uncond, out_cond = out.to(noisy.dtype).chunk(2)
        guided = cfg_rescale(cfg_combine(out_uncond, out_cond, guidance_scale), out_cond, guidance_rescale)
        return self.to_epsilon(guided, noisy, t)

    # ------------------------------------------------------------------ sampling
    def denoise(
        self,
        shape: tuple[int, ...],
        dtype: torch.dtype,
        forward: Callable,
        generator: torch.Generator | None,
        scheduler: str | None,
        steps: int,
        cfg: tuple[float, float] | None,
        eta: float = 0.0,
        progress: bool | Callable = True,
    ) -> torch.Tensor:
        """The sampling loop of diffusers' pipelines: latents of ``shape`` from ``generator``'s noise,
        denoised in ``steps`` steps of the scheduler ``scheduler`` (:func:`make_scheduler`).
        ``forward(model_in, t)`` is the UNet's raw output for the scaled model input, doubled
        (the unconditional half first) when ``cfg = (guidance_scale, guidance_rescale)`` is given;
        guidance is :func:`cfg_combine` then :func:`cfg_rescale`. ``progress``: a tqdm bar (``True``) or ``callback(i, t, latents)``."""
        sched = make_scheduler(scheduler, self.scheduler_config)
        sched.set_timesteps(steps, device=self.device)
        step_kwargs = {}
        step_params = set(inspect.signature(sched.step).parameters)
        if "eta" in step_params:
            step_kwargs["eta"] = eta
        if "generator" in step_params:
            step_kwargs["generator"] = generator
        latents = randn_tensor(shape, generator=generator, device=self.device, dtype=dtype)
        latents = latents * sched.init_noise_sigma

        bar = None
        if progress is True:
            bar = tqdm(total=len(sched.timesteps), desc="sampling", unit="step", leave=False)
        for i, t in enumerate(sched.timesteps):
            model_in = torch.cat([latents] * 2) if cfg else latents
            model_in = sched.scale_model_input(model_in, t)
            noise = forward(model_in, t)
            if cfg:
                noise_uncond, noise_cond = noise.chunk(2)
                noise = cfg_combine(noise_uncond, noise_cond, cfg[0])
                noise = cfg_rescale(noise, noise_cond, cfg[1])
            latents = sched.step(noise, t, latents, **step_kwargs, return_dict=False)[0]
            if bar is not None:
                bar.update()
            elif callable(progress):
                progress(i, t, latents)
        if bar is not None:
            bar.close()
        return latents

    # ------------------------------------------------------------------ sizes
    def check_size(self, height: int, width: int) -> None:
        f = self.vae_scale_factor
        for name, v in (("height", height), ("width", width)):
            if v < f or v % f:
                raise UserError(
                    f"{name} {v} is not a positive multiple of the VAE factor {f}; use e.g. {max(f, v - v % f)}"
                )


class LatentDiffusion(LatentSpace):
    """A Stable Diffusion model (diffusers layout) and the operations guidance needs."""

    modules = ("vae", "text_encoder", "unet")

    def __init__(
        self,
        vae,
        text_encoder,
        tokenizer,
        unet,
        scheduler_config: dict,
        device,
        dtype,
        source: str = "",
        takes_camera: bool = False,
    ):
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.takes_camera = takes_camera  # a camera-conditioned model (loading.takes_camera)
        self._prompt_cache: dict[str, torch.Tensor] = {}
        super().__init__(vae, unet, scheduler_config, device, dtype, source)

    @classmethod
    def load_parts(cls, folder: Path, device, dtype, source: str) -> LatentDiffusion:
        """The model in ``folder`` (:meth:`LatentSpace.from_pretrained` calls it)."""
        unet, vae, scheduler_config = cls.load_latent_parts(folder, dtype)
        text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", torch_dtype=dtype)
        tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
        camera = takes_camera(folder, unet.config)
        return cls(vae, text_encoder, tokenizer, unet, scheduler_config, device, dtype, source, camera)

    def to(self, device) -> LatentDiffusion:
        super().to(device)
        self._prompt_cache.clear()
        return self

    # ------------------------------------------------------------------ facts
    def describe(self) -> dict:
        return {**super().describe(), "takes_camera": self.takes_camera}

    # ------------------------------------------------------------------ camera
    def camera_labels(self, camera: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        """The UNet's class labels for ``batch`` images: ``None`` for a model without camera input,
        else ``camera`` (``(batch, F)`` or one ``(F,)`` row of :data:`~dream3d.cameras.CAMERA_FEATURES`)
        or, without one, zeros ("any view")."""
        if not self.takes_camera:
            if camera is not None:
                raise UserError(
                    f"the model '{self.source}' takes no camera; drop the camera, or use a "
                    f"camera-conditioned model (dream3d prior train camera_input=true)"
                )
            return None
        dim = self.unet.config.projection_class_embeddings_input_dim
        if camera is None:
            return torch.zeros(batch, dim, device=self.device, dtype=self.unet.dtype)
        camera = torch.as_tensor(camera).to(self.device, self.unet.dtype).reshape(-1, dim)
        return camera.expand(batch, dim) if camera.shape[0] == 1 else camera

    # ------------------------------------------------------------------ text
    @torch.no_grad()
    def encode_prompt(self, prompts: str | Sequence[str]) -> torch.Tensor:
        """Text embeddings (B, seq, dim) for ``prompts``; each distinct text is encoded once."""
        if isinstance(prompts, str):
            prompts = [prompts]
        missing = [p for p in dict.fromkeys(prompts) if p not in self._prompt_cache]
        if missing:
            embeds = self._encode_texts(missing)
            for p, e in zip(missing, embeds):
                self._prompt_cache[p] = e
        return torch.stack([self._prompt_cache[p] for p in prompts])

    def _encode_texts(self, texts: list[str]) -> torch.Tensor:
        """The tokenisation and encoding of diffusers' ``StableDiffusionPipeline.encode_prompt``."""
        tokens = self.tokenizer(
            texts,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        mask = None
        if getattr(self.text_encoder.config, "use_attention_mask", False):
            mask = tokens.attention_mask.to(self.device)
        out = self.text_encoder(tokens.input_ids.to(self.device), attention_mask=mask)[0]
        return out.to(dtype=self.text_encoder.dtype)

    def text_conditioning(
        self, prompts: Sequence[str], negative: str | Sequence[str] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(cond, uncond) embeddings; the unconditional text is ``negative`` or the empty prompt."""
        if negative is None:
            negative = [""] * len(prompts)
        elif isinstance(negative, str):
            negative = [negative] * len(prompts)
        if len(negative) != len(prompts):
            raise UserError(
                f"got {len(negative)} negative prompts for {len(prompts)} prompts; give one or the same number"
            )
        return self.encode_prompt(list(prompts)), self.encode_prompt(list(negative))

    def unet_forward(self, latents: torch.Tensor, t, embeddings: torch.Tensor, camera: torch.Tensor | None = None):
        """The raw UNet output for (already scaled) latent inputs (``camera``: :meth:`camera_labels`)."""
        labels = self.camera_labels(camera, latents.shape[0])
        return self.unet(
            latents.to(self.unet.dtype), t, encoder_hidden_states=embeddings, class_labels=labels, return_dict=False
        )[0]

    def predict_noise(
        self,
        noisy: torch.Tensor,
        t: torch.Tensor | int,
        cond: torch.Tensor,
        uncond: torch.Tensor | None = None,
        guidance_scale: float = 1.0,
        camera: torch.Tensor | None = None,
        guidance_rescale: float = 0.0,
    ) -> torch.Tensor:
        """Guided noise estimate ``eps_hat`` at training timestep(s) ``t``.

        Runs the conditional and unconditional branches as one batch (like diffusers) and combines
        the model's outputs with :func:`cfg_combine` (then :func:`cfg_rescale` by
        ``guidance_rescale``, as the pipeline does). With ``uncond=None`` or ``guidance_scale == 1``
        only the conditional branch runs. v-prediction outputs are converted to epsilon (after
        guidance; the conversion is linear). ``camera`` (a camera-conditioned model's
        :meth:`camera_labels`) conditions both branches, as MVDream does.
        """

        def forward(x, steps, doubled):
            if not doubled:
                return self.unet_forward(x, steps, cond, camera)
            labels = self.camera_labels(camera, noisy.shape[0])
            labels = torch.cat([labels, labels]) if labels is not None else None
            return self.unet_forward(x, steps, torch.cat([uncond, cond]), labels)

        do_cfg = uncond is not None and guidance_scale != 1.0
        return self.guided_epsilon(noisy, t, forward, do_cfg, guidance_scale, guidance_rescale)

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample(
        self,
        prompt: str | Sequence[str],
        negative_prompt: str | Sequence[str] | None = None,
        steps: int = 30,
        guidance_scale: float = 7.5,
        scheduler: str | None = None,
        generator: torch.Generator | None = None,
        height: int | None = None,
        width: int | None = None,
        num_images: int = 1,
        eta: float = 0.0,
        output: str = "pil",
        progress: bool | Callable = True,
        camera: torch.Tensor | None = None,
        guidance_rescale: float = 0.0,
    ):
        """Text-to-image. Matches ``StableDiffusionPipeline(...)(prompt, generator=g, ...)``.

        ``output``: ``"pil"`` (list of images), ``"np"`` (float array in [0, 1], B x H x W x 3),
        ``"pt"`` (tensor in [0, 1]) or ``"latent"``. ``camera``: one row of camera features for
        every image (a camera-conditioned model only; without it such a model draws any view).
        ``guidance_rescale``: the pipeline's argument of that name (diffusers' ``rescale_noise_cfg``,
        Lin et al. 2023, section 3.4): pulls the guided output's standard deviation back towards the
        conditional one's, against the over-saturation of strong guidance (0: off).
        """
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        height = height or self.default_size
        width = width or self.default_size
        if steps < 1:
            raise UserError(f"steps must be at least 1, got {steps}; use e.g. --steps 30")
        if guidance_scale < 0:
            raise UserError(f"guidance scale must be >= 0, got {guidance_scale}; use e.g. --guidance 7.5")
        if num_images < 1:
            raise UserError(f"number of images must be at least 1, got {num_images}")
        self.check_size(height, width)

        do_cfg = guidance_scale > 1.0
        cond, uncond = self.text_conditioning(prompts, negative_prompt)
        cond = cond.repeat_interleave(num_images, dim=0)
        uncond = uncond.repeat_interleave(num_images, dim=0)
        embeds = torch.cat([uncond, cond]) if do_cfg else cond
        labels = self.camera_labels(camera, embeds.shape[0])

        shape = (
            len(prompts) * num_images,
            self.unet.config.in_channels,
            height // self.vae_scale_factor,
            width // self.vae_scale_factor,
        )

        def forward(model_in, t):
            return self.unet(model_in, t, encoder_hidden_states=embeds, class_labels=labels, return_dict=False)[0]

        cfg = (guidance_scale, guidance_rescale) if do_cfg else None
        latents = self.denoise(shape, embeds.dtype, forward, generator, scheduler, steps, cfg, eta, progress)
        if output == "latent":
            return latents
        images = self.vae.decode(latents / self.vae.config.scaling_factor, return_dict=False, generator=generator)[0]
        images = (images / 2 + 0.5).clamp(0, 1)
        if output == "pt":
            return images
        arr = images.cpu().permute(0, 2, 3, 1).float().numpy()
        if output == "np":
            return arr
        return [Image.fromarray((a * 255).round().astype("uint8")) for a in arr]
