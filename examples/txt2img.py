"""Text to image from Python, the same as `dream3d txt2img`.

python examples/txt2img.py                     # the bundled shapes prior, on the CPU
python examples/txt2img.py --model stabilityai/stable-diffusion-2-1-base   # a real model (GPU)
"""

import argparse

import torch

import dream3d
from dream3d.diffusion.core import LatentDiffusion

p = argparse.ArgumentParser()
p.add_argument("--model", default=None)
p.add_argument("-o", "--output", default="outputs/example-txt2img")
args = p.parse_args()

# One call: returns PIL images and, with `output`, writes PNGs + txt2img.json.
images = dream3d.txt2img(
    "a red cube, side view", model=args.model, steps=20, scheduler="dpm", seed=0, num_images=4, output=args.output
)
print(f"{len(images)} images of size {images[0].size} in {args.output}/")

# The core underneath, for custom loops: the same object every guidance uses.
core = LatentDiffusion.from_pretrained(args.model)
cond, uncond = core.text_conditioning(["a blue sphere, front view"])
latents = torch.randn(
    1,
    core.unet.config.in_channels,
    core.default_size // core.vae_scale_factor,
    core.default_size // core.vae_scale_factor,
    generator=torch.Generator().manual_seed(0),
)
t = torch.tensor([500])
noisy = core.add_noise(latents, torch.randn_like(latents), t)
with torch.no_grad():
    eps = core.predict_noise(noisy, t, cond, uncond, guidance_scale=7.5)  # uncond + 7.5 * (cond - uncond)
    x0 = core.predict_x0(noisy, eps, t)
    image = core.decode_latents(x0)
print("one-step x0 estimate decoded to", tuple(image.shape))
