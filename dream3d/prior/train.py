"""Train the bundled shapes-world prior from scratch: ``dream3d prior train -o DIR``.

Two stages, each seeded, checkpointed and resumable:

1. **VAE** - an ``AutoencoderKL`` learns to compress 32 px renders into 8x8x4 latents
   (reconstruction MSE + a small per-element KL + an RGB-preview term that ties latent channels
   0-2 to the image box-averaged to latent size, so colour is robust in latent space). Its
   ``scaling_factor`` is then set to 1 / std of the dataset's latents, as Stable Diffusion does.
2. **Text encoder + UNet** - a small CLIP text encoder and a ``UNet2DConditionModel`` learn
   epsilon-prediction on the frozen VAE's latents with the captions ("a red cube, side view"),
   dropping 10% of captions to the empty text so classifier-free guidance works. An EMA of the
   weights is what gets saved.
   ``vae_from`` skips stage 1 and takes the VAE of an existing model instead.

Training runs on CUDA when it is available (``device``); the random draws stay on the CPU generator.

The result is a Stable Diffusion model in diffusers layout in ``DIR`` (loadable by
``StableDiffusionPipeline.from_pretrained(DIR)``); training state (rendered data cache, checkpoints,
``train.json`` with losses and times, a sample grid) lives in ``DIR/train/``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from ..errors import UserError


@dataclass
class PriorTrainConfig:
    seed: int = 0
    size: int = 32
    views_per_object: int = 400
    overhead_fraction: float = 0.15
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
    unet_channels: tuple[int, ...] = (64, 96, 128)
    unet_cross_attention_blocks: tuple[bool, ...] = (True, True, True)
    unet_layers_per_block: int = 1
    unet_heads: int = 4
    text_hidden: int = 128
    text_layers: int = 2
    text_heads: int = 4
    unet_steps: int = 4000
    # DDPM's linear schedule: at 8x8 latents SD's scaled-linear schedule leaves sqrt(abar_T) = 0.068 of
    # the image in the last step, enough for the model to read colour from the noise's mean (and
    # then ignore the prompt's colour when sampling); the linear schedule leaves 0.006.
    beta_schedule: str = "linear"
    beta_start: float = 0.0001
    beta_end: float = 0.02
    prediction_type: Literal["epsilon", "v_prediction"] = "epsilon"  # v: as Stable Diffusion 2.x
    batch: int = 32
    lr: float = 5e-4
    warmup_steps: int = 200
    caption_dropout: float = 0.1
    vae_from: str | None = None  # a model (folder, hub id, "shapes") whose VAE to use instead of stage 1
    device: str | None = None  # None: cuda when available, else cpu
    ema_decay: float = 0.999
    checkpoint_every: int = 500
    threads: int = 0  # 0: torch's default
    words: tuple[str, ...] = field(default_factory=tuple)  # extra vocabulary beyond the shapes world's

    def __post_init__(self):
        for name in ("vae_kl_weight", "vae_rgb_weight"):
            if getattr(self, name) < 0:
                raise UserError(f"{name} must be >= 0, got {getattr(self, name)}; use e.g. {name}=1e-4")


STAGES = ("vae", "unet")


def model_spec(cfg: PriorTrainConfig):
    from ..diffusion.build import DEFAULT_WORDS, ModelSpec

    return ModelSpec(
        image_size=cfg.size, vae_channels=tuple(cfg.vae_channels), unet_channels=tuple(cfg.unet_channels),
        unet_cross_attention_blocks=tuple(cfg.unet_cross_attention_blocks),
        unet_layers_per_block=cfg.unet_layers_per_block, unet_heads=cfg.unet_heads, text_hidden=cfg.text_hidden,
        text_layers=cfg.text_layers, text_heads=cfg.text_heads, words=tuple(DEFAULT_WORDS) + tuple(cfg.words),
        beta_schedule=cfg.beta_schedule, beta_start=cfg.beta_start, beta_end=cfg.beta_end,
        prediction_type=cfg.prediction_type,
    )


class Checkpoint:
    """One file per stage, written atomically; holds everything needed to continue exactly."""

    def __init__(self, folder: Path, stage: str):
        self.path = folder / f"{stage}.pt"

    def exists(self) -> bool:
        return self.path.is_file()

    def save(self, state: dict) -> None:
        from ..io import atomic_path

        with atomic_path(self.path) as tmp:
            torch.save(state, tmp)

    def load(self) -> dict:
        return torch.load(self.path, map_location="cpu", weights_only=False)


def train_prior(cfg: PriorTrainConfig, out: str | Path, resume: bool = False, progress: bool = True) -> dict:
    """Run both stages into ``out``; returns the training record (also ``out/train/train.json``)."""
    from ..config import save_config, to_dict
    from ..diffusion.build import build_components, save_model
    from ..diffusion.devices import resolve_device
    from ..diffusion.loading import resolve_model
    from ..io import ensure_writable_dir, write_json
    from .data import cached_views

    device = resolve_device(cfg.device)  # bad values fail here, before any folder or stage 1
    vae_path = resolve_model(cfg.vae_from) if cfg.vae_from else None
    out = ensure_writable_dir(out)
    work = ensure_writable_dir(out / "train")
    ckpt_dir = ensure_writable_dir(work / "checkpoints")
    if not resume and any(Checkpoint(ckpt_dir, s).exists() for s in STAGES):
        raise UserError(f"'{out}' already holds a training run; pass --resume to continue it or choose another -o")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    save_config(cfg, work / "config.yaml")
    record_path = work / "train.json"
    record: dict = {"config": to_dict(cfg), "stages": {}}
    if resume and record_path.is_file():
        import json

        record["stages"] = json.loads(record_path.read_text()).get("stages", {})

    start = time.perf_counter()
    data = cached_views(work, cfg.views_per_object, cfg.size, cfg.ss, cfg.overhead_fraction, cfg.seed, progress)
    record["data"] = {"images": len(data), "seconds": round(time.perf_counter() - start, 1)}

    parts = build_components(model_spec(cfg), seed=cfg.seed)
    images = data.tensors()
    if vae_path is not None:
        record["stages"]["vae"] = load_vae(parts, vae_path)
    else:
        record["stages"]["vae"] = train_vae(parts["vae"], images, cfg, Checkpoint(ckpt_dir, "vae"), progress)
    write_json(record_path, record)
    record["stages"]["unet"] = train_unet(parts, images, data.captions, cfg, Checkpoint(ckpt_dir, "unet"), progress,
                                          device)
    save_model(parts, out)
    record["seconds_total"] = round(sum(s.get("seconds", 0) for s in record["stages"].values()) + record["data"]["seconds"], 1)
    write_json(record_path, record)
    return record


def load_vae(parts: dict, path: Path) -> dict:
    """Replace ``parts["vae"]`` by the VAE of the model in ``path`` (its architecture must match the config's)."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(path, subfolder="vae")
    if list(vae.config.block_out_channels) != list(parts["vae"].config.block_out_channels):
        raise UserError(f"the VAE of '{path}' has channels {list(vae.config.block_out_channels)} but the config asks for "
                        f"{list(parts['vae'].config.block_out_channels)}; set vae_channels to match or drop vae_from")
    parts["vae"] = vae.eval().requires_grad_(False)
    return {"from": str(path), "scaling_factor": vae.config.scaling_factor, "seconds": 0.0}


def _mean(xs: list[float]) -> float:
    return sum(xs) / max(1, len(xs))


def _lr_at(step: int, cfg_lr: float, warmup: int, total: int) -> float:
    if step < warmup:
        return cfg_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return cfg_lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def train_vae(vae, images: torch.Tensor, cfg: PriorTrainConfig, ckpt: Checkpoint, progress: bool) -> dict:
    """Stage 1. Leaves ``vae`` trained, with ``scaling_factor`` set; returns losses and time."""
    from tqdm.auto import tqdm

    gen = torch.Generator().manual_seed(cfg.seed + 1)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    step, elapsed, losses = 0, 0.0, []
    if ckpt.exists():
        state = ckpt.load()
        vae.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        step, elapsed, losses = state["step"], state["seconds"], state["losses"]
    vae.train().requires_grad_(True)
    bar = tqdm(total=cfg.vae_steps, initial=step, desc="stage 1/2 VAE", unit="step", disable=not progress)
    t0 = time.perf_counter() - elapsed
    try:
        while step < cfg.vae_steps:
            step_start = gen.get_state()
            for g in opt.param_groups:
                g["lr"] = _lr_at(step, cfg.vae_lr, cfg.warmup_steps, cfg.vae_steps)
            idx = torch.randint(len(images), (cfg.vae_batch,), generator=gen)
            x = images[idx] * 2 - 1
            posterior = vae.encode(x).latent_dist
            z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=gen)
            rec = vae.decode(z).sample
            mse = torch.nn.functional.mse_loss(rec, x)
            kl = 0.5 * (posterior.mean**2 + posterior.var - 1.0 - posterior.logvar).mean()
            loss = mse + cfg.vae_kl_weight * kl
            if cfg.vae_rgb_weight:
                preview = torch.nn.functional.avg_pool2d(x, x.shape[-1] // posterior.mean.shape[-1])
                loss = loss + cfg.vae_rgb_weight * torch.nn.functional.mse_loss(posterior.mean[:, :3], preview)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            losses.append(mse.item())
            bar.update()
            if step % 20 == 0:
                bar.set_postfix(mse=f"{sum(losses[-20:]) / 20:.5f}", kl=f"{kl.item():.2f}")
            if step % cfg.checkpoint_every == 0 or step == cfg.vae_steps:
                ckpt.save({"model": vae.state_dict(), "optimizer": opt.state_dict(), "generator": gen.get_state(),
                           "step": step, "seconds": time.perf_counter() - t0, "losses": losses})
    except KeyboardInterrupt:  # save the state at the start of the unfinished step
        gen.set_state(step_start)
        ckpt.save({"model": vae.state_dict(), "optimizer": opt.state_dict(), "generator": gen.get_state(),
                   "step": step, "seconds": time.perf_counter() - t0, "losses": losses})
        raise
    finally:
        bar.close()
    vae.eval().requires_grad_(False)
    with torch.no_grad():
        means, rec_err = [], []
        for chunk in images.split(256):
            post = vae.encode(chunk * 2 - 1).latent_dist
            means.append(post.mean)
            rec = vae.decode(post.mean).sample
            rec_err.append(((rec.clamp(-1, 1) - (chunk * 2 - 1)) / 2).pow(2).mean(dim=(1, 2, 3)))
        latents = torch.cat(means)
        mse = torch.cat(rec_err).mean()
    scaling = float(1.0 / latents.std())
    vae.register_to_config(scaling_factor=scaling)
    psnr = float(10 * torch.log10(1.0 / mse))
    return {"steps": step, "first_mse": _mean(losses[:20]), "final_mse": _mean(losses[-100:]), "psnr_db": round(psnr, 2),
            "scaling_factor": scaling, "seconds": round(time.perf_counter() - t0, 1)}


def train_unet(parts: dict, images: torch.Tensor, captions: list[str], cfg: PriorTrainConfig, ckpt: Checkpoint,
               progress: bool, device: torch.device | str = "cpu") -> dict:
    """Stage 2: text encoder + UNet on the frozen VAE's latents; loads the EMA weights at the end.
    Random draws come from a CPU generator on every device, then move to ``device``."""
    from diffusers.training_utils import EMAModel
    from tqdm.auto import tqdm

    vae, unet, text_encoder, tokenizer, scheduler = (parts[k] for k in ("vae", "unet", "text_encoder", "tokenizer", "scheduler"))
    device = torch.device(device)
    with torch.no_grad():
        posts = [vae.encode(c * 2 - 1).latent_dist for c in images.split(256)]
        lat_mean = (torch.cat([p.mean for p in posts]) * vae.config.scaling_factor).to(device)
        lat_std = (torch.cat([p.std for p in posts]) * vae.config.scaling_factor).to(device)
    texts = sorted(set(captions)) + [""]
    lookup = {t: i for i, t in enumerate(texts)}
    token_ids = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                          return_tensors="pt").input_ids.to(device)
    caption_index = torch.tensor([lookup[c] for c in captions])
    empty = len(texts) - 1
    abar = scheduler.alphas_cumprod.to(device)
    unet.to(device)
    text_encoder.to(device)

    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-2)
    ema = EMAModel(params, decay=cfg.ema_decay)
    gen = torch.Generator().manual_seed(cfg.seed + 2)
    step, elapsed, losses = 0, 0.0, []
    if ckpt.exists():
        state = ckpt.load()
        unet.load_state_dict(state["unet"])
        text_encoder.load_state_dict(state["text_encoder"])
        opt.load_state_dict(state["optimizer"])
        ema.load_state_dict(state["ema"])
        ema.to(device)
        gen.set_state(state["generator"])
        step, elapsed, losses = state["step"], state["seconds"], state["losses"]

    def snapshot():
        return {"unet": unet.state_dict(), "text_encoder": text_encoder.state_dict(), "optimizer": opt.state_dict(),
                "ema": ema.state_dict(), "generator": gen.get_state(), "step": step,
                "seconds": time.perf_counter() - t0, "losses": losses}

    unet.train().requires_grad_(True)
    text_encoder.train().requires_grad_(True)
    bar = tqdm(total=cfg.unet_steps, initial=step, desc="stage 2/2 UNet", unit="step", disable=not progress)
    t0 = time.perf_counter() - elapsed
    try:
        while step < cfg.unet_steps:
            step_start = gen.get_state()
            for g in opt.param_groups:
                g["lr"] = _lr_at(step, cfg.lr, cfg.warmup_steps, cfg.unet_steps)
            idx = torch.randint(len(images), (cfg.batch,), generator=gen)
            sample = torch.randn((cfg.batch, *lat_mean.shape[1:]), generator=gen).to(device)
            rows = idx.to(device)
            x0 = lat_mean[rows] + lat_std[rows] * sample
            flip = torch.rand(cfg.batch, generator=gen) < 0.5  # shapes are mirror-symmetric: flips keep captions true
            x0 = torch.where(flip[:, None, None, None].to(device), x0.flip(-1), x0)
            drop = torch.rand(cfg.batch, generator=gen) < cfg.caption_dropout
            ids = token_ids[torch.where(drop, empty, caption_index[idx]).to(device)]
            t = torch.randint(0, len(abar), (cfg.batch,), generator=gen).to(device)
            noise = torch.randn(x0.shape, generator=gen).to(device)
            a = abar[t].reshape(-1, 1, 1, 1)
            noisy = a.sqrt() * x0 + (1 - a).sqrt() * noise
            embeds = text_encoder(ids)[0]
            pred = unet(noisy, t, encoder_hidden_states=embeds).sample
            target = noise if cfg.prediction_type == "epsilon" else scheduler.get_velocity(x0, noise, t)
            loss = torch.nn.functional.mse_loss(pred, target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            ema.step(params)
            step += 1
            losses.append(loss.item())
            bar.update()
            if step % 20 == 0:
                bar.set_postfix(loss=f"{sum(losses[-100:]) / len(losses[-100:]):.4f}")
            if step % cfg.checkpoint_every == 0 or step == cfg.unet_steps:
                ckpt.save(snapshot())
    except KeyboardInterrupt:  # save the state at the start of the unfinished step
        gen.set_state(step_start)
        ckpt.save(snapshot())
        raise
    finally:
        bar.close()
    ema.copy_to(params)
    unet.cpu().eval().requires_grad_(False)
    text_encoder.cpu().eval().requires_grad_(False)
    return {"steps": step, "first_loss": _mean(losses[:20]), "final_loss": _mean(losses[-200:]),
            "seconds": round(time.perf_counter() - t0, 1),
            "parameters": {"unet": sum(p.numel() for p in unet.parameters()),
                           "text_encoder": sum(p.numel() for p in text_encoder.parameters()),
                           "vae": sum(p.numel() for p in vae.parameters())}}
