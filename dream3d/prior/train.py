"""Train the bundled shapes-world prior from scratch: ``dream3d prior train -o DIR``.

Two stages in one command (:class:`~dream3d.trainer.StagedRun`: each seeded, checkpointed and
resumable, run by the one :class:`~dream3d.trainer.Trainer`):

1. **VAE** - an ``AutoencoderKL`` learns to compress 32 px renders into 8x8x4 latents
   (reconstruction MSE + a small per-element KL + an RGB-preview term that ties latent channels
   0-2 to the image box-averaged to latent size, so colour is robust in latent space). Its
   ``scaling_factor`` is then set to 1 / std of the dataset's latents, as Stable Diffusion does.
2. **Text encoder + UNet** - a small CLIP text encoder and a ``UNet2DConditionModel`` learn
   epsilon-prediction on the frozen VAE's latents with the captions ("a red cube, side view"),
   dropping 10% of captions to the empty text so classifier-free guidance works. An EMA of the
   weights is what gets saved.

Both stages warm the learning rate up linearly for ``warmup_steps`` steps, then follow a cosine
to 0 (diffusers' ``get_cosine_schedule_with_warmup``); the UNet's gradients are clipped to norm 1.
   ``vae_from`` skips stage 1 and takes the VAE of an existing model instead.

Training runs on CUDA when it is available (``device``); the random draws stay on the CPU generator.

The result is a Stable Diffusion model in diffusers layout in ``DIR`` (loadable by
``StableDiffusionPipeline.from_pretrained(DIR)``); training state (rendered data cache, checkpoints,
``train.json`` with losses and times, a sample grid) lives in ``DIR/train/``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from diffusers import AutoencoderKL
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.training_utils import EMAModel

from ..cameras import CameraRanges, camera_features, mirror_features
from ..config import save_config, to_dict
from ..diffusion.build import DEFAULT_WORDS, ModelSpec, build_components, save_model
from ..diffusion.devices import resolve_device
from ..diffusion.loading import resolve_model
from ..errors import UserError
from ..io import ensure_writable_dir, write_json
from ..trainer import SingleModelTask, Stage, StagedRun, StepOutput, Trainer, TrainingTask
from .data import cached_views


@dataclass
class UNetRecipe:
    """What the text and the view prior's UNet stages share: the UNet's sizes, the noise schedule
    and the optimisation (AdamW, cosine after a linear warm-up, EMA), and where it runs."""

    unet_channels: tuple[int, ...] = (64, 96, 128)
    unet_cross_attention_blocks: tuple[bool, ...] = (True, True, True)
    unet_layers_per_block: int = 1
    unet_heads: int = 4
    # DDPM's linear schedule: at 8x8 latents SD's scaled-linear schedule leaves sqrt(abar_T) = 0.068 of
    # the image in the last step, enough for the model to read colour from the noise's mean (and
    # then ignore the prompt's colour when sampling); the linear schedule leaves 0.006.
    beta_schedule: str = "linear"
    beta_start: float = 0.0001
    beta_end: float = 0.02
    prediction_type: Literal["epsilon", "v_prediction"] = "v_prediction"  # as Stable Diffusion 2.x
    batch: int = 32
    lr: float = 5e-4
    warmup_steps: int = 200
    device: str | None = None  # None: cuda when available, else cpu
    ema_decay: float = 0.999
    checkpoint_every: int = 500
    threads: int = 0  # 0: torch's default

    def spec_fields(self) -> dict:
        """The UNet's sizes and the schedule, as keyword arguments of a model spec (``dream3d.diffusion.build``)."""
        return {
            "unet_channels": tuple(self.unet_channels),
            "unet_cross_attention_blocks": tuple(self.unet_cross_attention_blocks),
            "unet_layers_per_block": self.unet_layers_per_block,
            "unet_heads": self.unet_heads,
            "beta_schedule": self.beta_schedule,
            "beta_start": self.beta_start,
            "beta_end": self.beta_end,
            "prediction_type": self.prediction_type,
        }


@dataclass
class PriorTrainConfig(UNetRecipe):
    seed: int = 0
    size: int = 32
    views_per_object: int = 400
    cameras: CameraRanges = field(default_factory=CameraRanges)  # where the training views are drawn from
    ss: int = 4
    # Stage 1: VAE
    vae_channels: tuple[int, ...] = (32, 64, 64)
    vae_steps: int = 1200
    vae_batch: int = 32
    vae_lr: float = 1e-3
    vae_kl_weight: float = 1e-4  # times the KL averaged per latent element
    # Ties the first three latent channels to the image box-averaged to latent size (an RGB preview),
    # so that colour lives in large, robust latent directions rather than small ones the UNet gets wrong.
    vae_rgb_weight: float = 1.0
    # Stage 2: text encoder + UNet
    text_hidden: int = 128
    text_layers: int = 2
    text_heads: int = 4
    unet_steps: int = 4000
    caption_dropout: float = 0.1
    # A camera-conditioned UNet (docs/cameras.md, CAMERA_FEATURES as diffusers' "projection" class
    # embedding). Each image's camera is dropped to zeros ("any view") with camera_dropout; where it
    # stays, its caption loses the view words with view_word_dropout; so both "a red cube" + a camera
    # and "a red cube, side view" without one are prompts it knows.
    camera_input: bool = True
    camera_dropout: float = 0.2
    view_word_dropout: float = 0.5
    vae_from: str | None = None  # a model (folder, hub id, "shapes") whose VAE to use instead of stage 1
    words: tuple[str, ...] = field(default_factory=tuple)  # extra vocabulary beyond the shapes world's

    def __post_init__(self):
        for name in ("vae_kl_weight", "vae_rgb_weight"):
            if getattr(self, name) < 0:
                raise UserError(f"{name} must be >= 0, got {getattr(self, name)}; use e.g. {name}=1e-4")
        for name in ("caption_dropout", "camera_dropout", "view_word_dropout"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise UserError(f"{name} must be in [0, 1], got {getattr(self, name)}")


def model_spec(cfg: PriorTrainConfig) -> ModelSpec:
    return ModelSpec(
        image_size=cfg.size,
        vae_channels=tuple(cfg.vae_channels),
        text_hidden=cfg.text_hidden,
        text_layers=cfg.text_layers,
        text_heads=cfg.text_heads,
        words=tuple(DEFAULT_WORDS) + tuple(cfg.words),
        camera_input=cfg.camera_input,
        **cfg.spec_fields(),
    )


def train_prior(cfg: PriorTrainConfig, out: str | Path, resume: bool = False, progress: bool = True) -> dict:
    """Run both stages into ``out``; returns the training record (also ``out/train/train.json``)."""
    device = resolve_device(cfg.device)  # bad values fail here, before any folder or stage 1
    vae_path = resolve_model(cfg.vae_from) if cfg.vae_from else None
    out = ensure_writable_dir(out)
    work = ensure_writable_dir(out / "train")
    parts: dict = {}
    data = None
    stages = [] if vae_path is not None else [vae_stage(lambda: parts["vae"], lambda: data.tensors(), cfg)]
    stages.append(
        unet_stage(
            lambda: parts,
            lambda: data.tensors(),
            lambda: data.captions,
            cfg,
            device,
            cameras=lambda: camera_features(data.elevation, data.azimuth, data.distance, data.fov),
        )
    )
    run = start_staged_run(stages, work, out, cfg, resume, progress)
    record_path = work / "train.json"
    record: dict = {"config": to_dict(cfg), "stages": {}}
    if resume and record_path.is_file():
        record["stages"] = json.loads(record_path.read_text()).get("stages", {})

    start = time.perf_counter()
    data = cached_views(work, cfg.views_per_object, cfg.size, cfg.ss, cfg.cameras, cfg.seed, progress)
    record["data"] = {"images": len(data), "seconds": round(time.perf_counter() - start, 1)}
    parts.update(build_components(model_spec(cfg), seed=cfg.seed))
    if vae_path is not None:
        record["stages"]["vae"] = load_vae(parts, vae_path)
    record["stages"].update(run.run())
    save_model(parts, out)
    record["seconds_total"] = round(
        sum(s.get("seconds", 0) for s in record["stages"].values()) + record["data"]["seconds"], 1
    )
    write_json(record_path, record)
    return record


def load_vae(parts: dict, path: Path) -> dict:
    """Replace ``parts["vae"]`` by the VAE of the model in ``path`` (its architecture must match the config's)."""
    vae = AutoencoderKL.from_pretrained(path, subfolder="vae")
    if list(vae.config.block_out_channels) != list(parts["vae"].config.block_out_channels):
        raise UserError(
            f"the VAE of '{path}' has channels {list(vae.config.block_out_channels)} but the config asks for "
            f"{list(parts['vae'].config.block_out_channels)}; set vae_channels to match or drop vae_from"
        )
    parts["vae"] = vae.eval().requires_grad_(False)
    return {"from": str(path), "scaling_factor": vae.config.scaling_factor, "seconds": 0.0}


def _mean(xs: list[float]) -> float:
    return sum(xs) / max(1, len(xs))


class VAETraining(SingleModelTask):
    """Stage 1: reconstruction MSE + KL (per latent element) + the RGB-preview term."""

    name = "vae"
    progress_keys = ("mse", "kl")

    def __init__(self, vae, images: torch.Tensor, cfg: PriorTrainConfig):
        self.model, self.images, self.cfg = vae, images, cfg
        vae.train().requires_grad_(True)
        self.optimizer = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
        self.scheduler = get_cosine_schedule_with_warmup(self.optimizer, cfg.warmup_steps, cfg.vae_steps)

    def training_step(self, step: int, generator: torch.Generator) -> StepOutput:
        cfg, vae = self.cfg, self.model
        idx = torch.randint(len(self.images), (cfg.vae_batch,), generator=generator)
        x = self.images[idx] * 2 - 1
        posterior = vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator)
        rec = vae.decode(z).sample
        mse = torch.nn.functional.mse_loss(rec, x)
        kl = 0.5 * (posterior.mean**2 + posterior.var - 1.0 - posterior.logvar).mean()
        loss = mse + cfg.vae_kl_weight * kl
        if cfg.vae_rgb_weight:
            preview = torch.nn.functional.avg_pool2d(x, x.shape[-1] // posterior.mean.shape[-1])
            loss = loss + cfg.vae_rgb_weight * torch.nn.functional.mse_loss(posterior.mean[:, :3], preview)
        return StepOutput(loss, {"mse": mse.item(), "kl": kl.item()})

    @torch.no_grad()
    def finish(self, trainer: Trainer) -> dict:
        """Freeze the VAE and set ``scaling_factor`` = 1 / std of the data's latents; returns the stage's record."""
        vae, images = self.model.eval().requires_grad_(False), self.images
        means, rec_err = [], []
        for chunk in images.split(256):
            post = vae.encode(chunk * 2 - 1).latent_dist
            means.append(post.mean)
            rec = vae.decode(post.mean).sample
            rec_err.append(((rec.clamp(-1, 1) - (chunk * 2 - 1)) / 2).pow(2).mean(dim=(1, 2, 3)))
        scaling = float(1.0 / torch.cat(means).std())
        vae.register_to_config(scaling_factor=scaling)
        psnr = float(10 * torch.log10(1.0 / torch.cat(rec_err).mean()))
        losses = [h["mse"] for h in trainer.history]
        return {
            "steps": trainer.step,
            "first_mse": _mean(losses[:20]),
            "final_mse": _mean(losses[-100:]),
            "psnr_db": round(psnr, 2),
            "scaling_factor": scaling,
            "seconds": round(trainer.seconds, 1),
        }


def vae_stage(vae, images, cfg: PriorTrainConfig) -> Stage:
    """Stage 1 (``vae``, seed + 1); ``vae`` and ``images`` are callables, read when the stage starts."""
    return Stage(
        "vae",
        cfg.vae_steps,
        cfg.seed + 1,
        build=lambda: VAETraining(vae(), images(), cfg),
        finish=lambda task, trainer: task.finish(trainer),
        desc="stage 1/2 VAE",
        checkpoint_every=cfg.checkpoint_every,
    )


def start_staged_run(stages: list[Stage], work: Path, out: Path, cfg: UNetRecipe, resume: bool, progress: bool):
    """A prior's :class:`StagedRun` checkpointing to ``work/checkpoints``: a fresh run may not start
    over earlier checkpoints in ``out``; torch's thread count set (``cfg.threads``); the config
    saved to ``work/config.yaml``."""
    run = StagedRun(stages, work / "checkpoints", resume=resume, progress=progress)
    if not resume:
        run.check_start(out)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    save_config(cfg, work / "config.yaml")
    return run


class EMATraining(TrainingTask):
    """A task that trains the modules ``self.trained`` (name -> module, in order) jointly with one
    AdamW (``weight_decay`` 1e-2) under a cosine schedule with warm-up, gradients clipped to norm 1,
    and an EMA of the weights that :meth:`finish_ema` loads at the end. Subclasses call
    :meth:`setup` after setting ``self.trained`` and ``self.device``; checkpoints hold every module
    under its name, and ``"ema"``; the optimizer is named :attr:`optimizer_name`."""

    optimizer_name = "model"
    trained: dict[str, torch.nn.Module]
    device: torch.device
    parts: dict  # the model's parts: "vae" and "scheduler" at least
    cfg: UNetRecipe

    def setup(self, lr: float, warmup_steps: int, steps: int, ema_decay: float) -> None:
        self.params = [p for module in self.trained.values() for p in module.parameters()]
        self.optimizer = torch.optim.AdamW(self.params, lr=lr, weight_decay=1e-2)
        self.scheduler = get_cosine_schedule_with_warmup(self.optimizer, warmup_steps, steps)
        self.ema = EMAModel(self.params, decay=ema_decay)
        for module in self.trained.values():
            module.train().requires_grad_(True)

    def optimizers(self):
        return {self.optimizer_name: self.optimizer}

    def lr_schedulers(self):
        return {self.optimizer_name: self.scheduler}

    def state_dict(self) -> dict:
        return {**{name: m.state_dict() for name, m in self.trained.items()}, "ema": self.ema.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        for name, module in self.trained.items():
            module.load_state_dict(state[name])
        self.ema.load_state_dict(state["ema"])
        self.ema.to(self.device)

    def clip_gradients(self) -> None:
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)

    def after_optimizer_step(self, step: int) -> None:
        self.ema.step(self.params)

    def diffusion_loss(self, pred: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor):
        """MSE of the UNet's output against its target: the noise, or the velocity (``cfg.prediction_type``)."""
        scheduler = self.parts["scheduler"]
        target = noise if self.cfg.prediction_type == "epsilon" else scheduler.get_velocity(x0, noise, t)
        return torch.nn.functional.mse_loss(pred, target)

    def finish(self, trainer: Trainer) -> dict:
        """Load the EMA weights, hand the parts back on the CPU, frozen; returns the stage's record
        (with the frozen VAE's parameter count)."""
        record = self.finish_ema(trainer)
        record["parameters"]["vae"] = sum(p.numel() for p in self.parts["vae"].parameters())
        return record

    def finish_ema(self, trainer: Trainer) -> dict:
        """Load the EMA weights, hand the modules back on the CPU, frozen; returns the losses and the
        parameter counts for the stage's record."""
        self.ema.copy_to(self.params)
        for module in self.trained.values():
            module.cpu().eval().requires_grad_(False)
        losses = [h["loss"] for h in trainer.history]
        return {
            "steps": trainer.step,
            "first_loss": _mean(losses[:20]),
            "final_loss": _mean(losses[-200:]),
            "seconds": round(trainer.seconds, 1),
            "parameters": {name: sum(p.numel() for p in m.parameters()) for name, m in self.trained.items()},
        }


class UNetTraining(EMATraining):
    """Stage 2: text encoder + UNet on the frozen VAE's latents, with an EMA of the weights.
    Random draws come from a CPU generator on every device, then move to ``device``. A
    camera-conditioned UNet (``cfg.camera_input``) also gets each image's ``cameras`` features."""

    optimizer_name = "unet"

    def __init__(
        self,
        parts: dict,
        images: torch.Tensor,
        captions: list[str],
        cfg: PriorTrainConfig,
        device: torch.device | str = "cpu",
        cameras: torch.Tensor | None = None,
    ):
        self.parts, self.cfg, self.device = parts, cfg, torch.device(device)
        vae, tokenizer = parts["vae"], parts["tokenizer"]
        with torch.no_grad():
            posts = [vae.encode(c * 2 - 1).latent_dist for c in images.split(256)]
            self.lat_mean = (torch.cat([p.mean for p in posts]) * vae.config.scaling_factor).to(self.device)
            self.lat_std = (torch.cat([p.std for p in posts]) * vae.config.scaling_factor).to(self.device)
        plain = [c.split(",")[0] for c in captions]  # without the view words
        texts = sorted(set(captions) | (set(plain) if cfg.camera_input else set())) + [""]
        lookup = {t: i for i, t in enumerate(texts)}
        self.token_ids = tokenizer(
            texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids.to(self.device)
        self.caption_index = torch.tensor([lookup[c] for c in captions])
        self.empty = len(texts) - 1
        if cfg.camera_input:
            if cameras is None or len(cameras) != len(captions):
                raise UserError("a camera-conditioned UNet needs one camera per training image")
            self.plain_index = torch.tensor([lookup[c] for c in plain])
            self.cameras = cameras.to(self.device)
        self.unet, self.text_encoder = parts["unet"].to(self.device), parts["text_encoder"].to(self.device)
        self.trained = {"unet": self.unet, "text_encoder": self.text_encoder}
        self.setup(cfg.lr, cfg.warmup_steps, cfg.unet_steps, cfg.ema_decay)

    def training_step(self, step: int, generator: torch.Generator) -> StepOutput:
        cfg, device, scheduler = self.cfg, self.device, self.parts["scheduler"]
        idx = torch.randint(len(self.caption_index), (cfg.batch,), generator=generator)
        sample = torch.randn((cfg.batch, *self.lat_mean.shape[1:]), generator=generator).to(device)
        rows = idx.to(device)
        x0 = self.lat_mean[rows] + self.lat_std[rows] * sample
        flip = torch.rand(cfg.batch, generator=generator) < 0.5  # shapes are mirror-symmetric: flips keep captions true
        x0 = torch.where(flip[:, None, None, None].to(device), x0.flip(-1), x0)
        drop = torch.rand(cfg.batch, generator=generator) < cfg.caption_dropout
        caption = self.caption_index[idx]
        t = torch.randint(0, len(scheduler.alphas_cumprod), (cfg.batch,), generator=generator).to(device)
        noise = torch.randn(x0.shape, generator=generator).to(device)
        labels = None
        if cfg.camera_input:  # drawn after the rest, so the draws of a model without camera stay as they were
            labels = self.cameras[rows]
            labels = torch.where(flip[:, None].to(device), mirror_features(labels), labels)
            no_camera = torch.rand(cfg.batch, generator=generator) < cfg.camera_dropout
            labels = torch.where(no_camera[:, None].to(device), torch.zeros_like(labels), labels)
            # the view words go only where the camera stays: a sample keeps at least one view signal, and
            # the samples without a camera teach the view words alone (prompts such as "a red cube, side view")
            no_words = (torch.rand(cfg.batch, generator=generator) < cfg.view_word_dropout) & ~no_camera
            caption = torch.where(no_words, self.plain_index[idx], caption)
        ids = self.token_ids[torch.where(drop, self.empty, caption).to(device)]
        noisy = scheduler.add_noise(x0, noise, t)
        embeds = self.text_encoder(ids)[0]
        pred = self.unet(noisy, t, encoder_hidden_states=embeds, class_labels=labels).sample
        return StepOutput(self.diffusion_loss(pred, x0, noise, t), {})


def unet_stage(
    parts, images, captions, cfg: PriorTrainConfig, device: torch.device | str = "cpu", cameras=None
) -> Stage:
    """Stage 2 (``unet``, seed + 2); ``parts``, ``images``, ``captions`` (and, for a
    camera-conditioned UNet, ``cameras``: the images' camera features) are callables, read when the
    stage starts (after stage 1 trained the VAE)."""
    return Stage(
        "unet",
        cfg.unet_steps,
        cfg.seed + 2,
        build=lambda: UNetTraining(parts(), images(), captions(), cfg, device, cameras() if cameras else None),
        finish=lambda task, trainer: task.finish(trainer),
        desc="stage 2/2 UNet",
        checkpoint_every=cfg.checkpoint_every,
    )
