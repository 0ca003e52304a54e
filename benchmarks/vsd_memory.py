"""Seconds per step and peak GPU memory of the ProlificDreamer GPU recipe (configs/prolificdreamer-sd.yaml)
with a model of Stable Diffusion 2.1 base's architecture and random weights (cost does not depend on
the weights; nothing is downloaded).

    python benchmarks/vsd_memory.py [--steps 6] [--device cuda] [--dtype fp16] [key=value ...]

The UNet, VAE and text encoder are built from SD 2.1 base's public configs (865.9M + 83.7M + 340.4M
parameters; the tokenizer is the project's word tokenizer with CLIP's 77 tokens, the text encoder
keeps CLIP's 49,408-token table). The run renders at 64 px for the first half of the steps and at
512 px after (the recipe's milestone moved to that step); it reports each size's median seconds per
step and the peak memory (``torch.cuda.max_memory_allocated``) of the 512 px steps, with one UNet
and its LoRA in memory, and writes benchmarks/results/vsd_memory.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import median, peak_rss_mb, write_results  # noqa: E402


def sd21_base_components() -> dict:
    """SD 2.1 base's UNet, VAE, text encoder (public configs) and noise schedule, random weights."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from dream3d.diffusion.build import DEFAULT_WORDS
    from dream3d.diffusion.tokenizer import build_word_tokenizer

    torch.manual_seed(0)
    tokenizer = build_word_tokenizer(DEFAULT_WORDS, max_length=77)
    eos = tokenizer.convert_tokens_to_ids(tokenizer.eos_token)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=1024,
            intermediate_size=4096,
            num_hidden_layers=23,
            num_attention_heads=16,
            max_position_embeddings=77,
            hidden_act="gelu",
            projection_dim=512,
            bos_token_id=tokenizer.convert_tokens_to_ids(tokenizer.bos_token),
            eos_token_id=eos,
            pad_token_id=eos,
        )
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        latent_channels=4,
        sample_size=768,
        scaling_factor=0.18215,
    )
    unet = UNet2DConditionModel(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        attention_head_dim=(5, 10, 20, 20),
        cross_attention_dim=1024,
        use_linear_projection=True,
    )
    scheduler = DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        clip_sample=False,
        steps_offset=1,
    )
    return {"vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer, "unet": unet, "scheduler": scheduler}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=6, help="steps in all: half at 64 px, half at 512 px")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default=None, help="default: fp16 on CUDA")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    args = p.parse_args()

    from dream3d.diffusion.core import LatentDiffusion
    from dream3d.diffusion.devices import resolve_device, resolve_dtype
    from dream3d.systems.dreamfusion import DreamFusion
    from dream3d.text_to_3d import CONFIG_DIR, load_txt2mesh_config
    from dream3d.trainer import Trainer

    device = resolve_device(args.device)
    half = args.steps // 2
    components = sd21_base_components()
    params = {k: sum(p.numel() for p in components[k].parameters()) for k in ("unet", "vae", "text_encoder")}
    dtype = resolve_dtype(args.dtype, device)
    parts = [components[k].to(device, dtype) for k in ("vae", "text_encoder")]
    unet = components["unet"].to(device, dtype)
    scheduler = dict(components["scheduler"].config)
    core = LatentDiffusion(*parts, components["tokenizer"], unet, scheduler, device, dtype, "sd21-base-random")
    del components
    overrides = [f"cameras.resolution_milestones=[{half}]", *args.overrides]
    cfg = load_txt2mesh_config(
        "a DSLR photo of a hamburger", CONFIG_DIR / "prolificdreamer-sd.yaml", "sd21-base-random", 0, overrides
    )
    system = DreamFusion(cfg, cfg.prompt, core, device, cfg.seed)
    lora = sum(p.numel() for p in system.guidance.lora.parameters())
    camera = sum(p.numel() for p in system.guidance.camera_embedding.parameters())
    trainer = Trainer(system, args.steps, None, torch.Generator().manual_seed(0), progress=False)
    seconds, skipped = {}, 0
    peak = 0.0
    for step in range(args.steps):
        size = cfg.cameras.size(step)[0]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            if step == half:
                torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        skipped += trainer.run_step()[1]
        trainer.step += 1
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds.setdefault(size, []).append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": str(core.dtype),
        "parameters": {**params, "lora": lora, "camera_embedding": camera},
        # the median of each size's steps after its first (warm-up) step
        **{f"seconds_per_step_{size}px": round(median(s[1:] or s), 3) for size, s in seconds.items()},
        "peak_gpu_mb_after_milestone": round(peak),
        "peak_rss_mb": round(peak_rss_mb()),
        "skipped_steps": skipped,  # random weights may give non-finite steps; they cost the same
    }
    for k, v in result.items():
        print(f"{k}: {v}")
    write_results("vsd_memory", result)


if __name__ == "__main__":
    main()
