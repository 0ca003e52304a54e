"""Overrides that make a txt2mesh run on the tiny random prior take seconds (shared by the tests)."""

FAST = [
    "cameras.height=16",
    "cameras.width=16",
    "cameras.batch=1",
    "renderer.sampler.num_samples=24",
    "renderer.grid.resolution=16",
    "renderer.grid.warmup_steps=2",
    "renderer.grid.update_every=2",
    "export.resolution=24",
    "export.turntable_frames=2",
    "export.turntable_size=16",
    "guidance.kind=target",
    "guidance.denoise_steps=2",
    "val_every=0",
    "val_size=16",
    "material.albedo_warmup_steps=1",
]
