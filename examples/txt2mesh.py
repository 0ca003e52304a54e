"""Text to 3D from Python, the same as `dream3d txt2mesh`, and the parts underneath.

python examples/txt2mesh.py                    # the bundled shapes prior, on the CPU (~1 min)
"""

import argparse

import torch

import dream3d
from dream3d.diffusion.core import LatentDiffusion
from dream3d.guidance import SDSConfig
from dream3d.systems.dreamfusion import DreamFusion
from dream3d.text_to_3d import load_txt2mesh_config
from dream3d.trainer import Trainer

p = argparse.ArgumentParser()
p.add_argument("-o", "--output", default="outputs/example-txt2mesh")
p.add_argument("--steps", type=int, default=150)
args = p.parse_args()

# One call: the shapes recipe with nested settings as dicts (or config dataclasses); writes the
# mesh, the turntable and metrics.json, and returns the metrics.
metrics = dream3d.txt2mesh(
    "a blue cylinder",
    f"{args.output}/run",
    steps=args.steps,
    guidance={"t_max_end": 0.4},
    export={"turntable_formats": ["gif"]},
)
print(f"{metrics['steps']} steps in {metrics['seconds']} s: {args.output}/run/mesh.glb, turntable.gif")

# The parts underneath: a DreamFusion system with SDS instead of the recipe's denoised target,
# run for a few steps on the one trainer, then one validation picture.
cfg = load_txt2mesh_config("a blue cylinder", values={"guidance": SDSConfig(guidance_scale=30.0)})
core = LatentDiffusion.from_pretrained(cfg.model)
system = DreamFusion(cfg, cfg.prompt, core, core.device, seed=0)
trainer = Trainer(system, 5, None, torch.Generator().manual_seed(0), progress=False)
trainer.fit()
print("losses:", [round(h["loss"], 4) for h in trainer.history], "- validation grid", system.validation_image(5).shape)
