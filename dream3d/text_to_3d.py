"""Text to 3D (``dream3d txt2mesh``, ``dream3d.txt2mesh``): a DreamFusion run, then its asset.

The run composes the :class:`~dream3d.systems.dreamfusion.DreamFusion` system from the config's
parts, runs it with the one :class:`~dream3d.trainer.Trainer` and exports the geometry. One seeded
run = config + prompt -> output folder:

- ``config.yaml``: the resolved config (loads back with ``--config``);
- ``checkpoints/coarse.pt``: every ``checkpoint_every`` steps, at the end, and on Ctrl-C;
  ``resume=True`` continues from it to the same result as an uninterrupted run;
- ``val/step-NNNNN.png``: validation grids (RGB | normal | opacity);
- ``mesh.glb/.obj/.ply``, ``turntable.mp4/.gif``, ``export.json``;
- ``metrics.json``: time, steps, peak memory, skipped steps, final loss, what served the hash
  encoding, the export's summary.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .config import load_config, save_config
from .diffusion.core import LatentDiffusion
from .diffusion.devices import dtype_name, resolve_device
from .errors import UserError
from .export import ExportConfig
from .io import ensure_writable_dir, write_json
from .prior.vocabulary import warn_unknown_words
from .systems.dreamfusion import DreamFusion, DreamFusionConfig
from .trainer import Stage, StagedRun

CONFIG_DIR = Path(__file__).resolve().parent / "configs"  # shipped in the package; ./configs links here


@dataclass
class Txt2MeshConfig(DreamFusionConfig):
    """A text-to-3D run: the DreamFusion system's parts (inherited) and the run's own settings."""

    prompt: str = ""
    model: str | None = None  # None: the bundled shapes prior
    seed: int = 0
    steps: int = 1000
    device: str | None = None
    dtype: str | None = None
    export: ExportConfig = field(default_factory=ExportConfig)
    val_every: int = 200
    checkpoint_every: int = 200
    max_skipped_steps: int = 20  # consecutive non-finite steps before the run stops


def default_config_path(model: str | None) -> Path:
    """``configs/shapes-dreamfusion.yaml`` for the bundled prior, ``configs/dreamfusion-sd.yaml`` otherwise."""
    return CONFIG_DIR / ("shapes-dreamfusion.yaml" if model in (None, "shapes") else "dreamfusion-sd.yaml")


def load_txt2mesh_config(
    prompt: str,
    config: str | Path | None = None,
    model: str | None = None,
    seed: int | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    values: dict[str, Any] | None = None,
) -> Txt2MeshConfig:
    """The config of a run: the file (default: by model), then ``prompt``/``model``/``seed`` and
    nested ``values`` (dicts or config dataclasses), then ``key=value`` overrides."""
    path = Path(config) if config is not None else default_config_path(model)
    given = {
        "prompt": prompt,
        **({"model": model} if model is not None else {}),
        **({"seed": seed} if seed is not None else {}),
        **(values or {}),
    }
    return load_config(Txt2MeshConfig, path, overrides, values=given)


def run_txt2mesh(cfg: Txt2MeshConfig, out: str | Path, resume: bool = False, progress: bool = True) -> dict:
    """Optimise, validate, checkpoint and export; returns ``metrics.json``'s content.

    Ctrl-C stops after the running step with a checkpoint, exports what the run has and writes
    ``metrics.json`` (``"interrupted": true``) before the interrupt propagates.
    """
    if not cfg.prompt.strip():
        raise UserError('the prompt is empty; pass some text, e.g. dream3d txt2mesh "a red cube"')
    if cfg.steps < 1:
        raise UserError(f"steps must be at least 1, got {cfg.steps}")
    out = ensure_writable_dir(out)
    device = resolve_device(cfg.device)
    # The stage builds its system when it starts, from the prior loaded below.
    stage = Stage(
        "coarse",
        cfg.steps,
        cfg.seed,
        build=lambda: DreamFusion(cfg, cfg.prompt, core, device, cfg.seed),
        desc="txt2mesh",
        checkpoint_every=cfg.checkpoint_every,
        val_every=cfg.val_every,
        val_dir=out / "val",
        max_skipped_steps=cfg.max_skipped_steps,
    )
    run = StagedRun(
        [stage], out / "checkpoints", resume=resume, progress=progress, meta={"prompt": cfg.prompt, "seed": cfg.seed}
    )
    run.check_start(out)
    if cfg.model in (None, "shapes"):
        warn_unknown_words(cfg.prompt)
    core = LatentDiffusion.from_pretrained(cfg.model, device=device, dtype=cfg.dtype)
    save_config(cfg, out / "config.yaml")
    try:
        run.run()
    except KeyboardInterrupt:
        if run.task is not None:
            info = _export_quietly(run.task, out, cfg.export)
            write_json(out / "metrics.json", {**_metrics(cfg, run, core, info), "interrupted": True})
        raise
    metrics = _metrics(cfg, run, core, run.task.export(out, cfg.export))
    write_json(out / "metrics.json", metrics)
    return metrics


def _export_quietly(system: DreamFusion, out: Path, cfg: ExportConfig) -> dict:
    try:
        return system.export(out, cfg)
    except UserError as e:  # e.g. nothing solid yet
        return {"error": str(e)}


def _metrics(cfg: Txt2MeshConfig, run: StagedRun, core: LatentDiffusion, export_info: dict) -> dict:
    trainer, system = run.trainer, run.task
    if system.device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(system.device) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    last = trainer.history[-50:]
    return {
        "prompt": cfg.prompt,
        "seed": cfg.seed,
        "steps": trainer.step,
        "seconds": round(trainer.seconds, 1),
        "steps_per_second": round(trainer.step / trainer.seconds, 3) if trainer.seconds else None,
        "peak_memory_mb": round(peak),
        "device": str(system.device),
        "dtype": dtype_name(core.dtype),
        "model": core.source,
        **system.geometry.describe(),
        "skipped_steps": trainer.skipped,
        "final_loss": sum(h["loss"] for h in last) / max(1, len(last)),
        "export": export_info,
    }


def txt2mesh(
    prompt: str,
    output: str | Path,
    config: str | Path | None = None,
    model: str | None = None,
    seed: int | None = None,
    resume: bool = False,
    progress: bool = True,
    **values,
) -> dict:
    """Python face of ``dream3d txt2mesh``; returns ``metrics.json``'s content.

    ``values`` set config fields as ``txt2img`` does, nested values as dicts or config dataclasses:
    ``txt2mesh("a red cube", "out", steps=500, guidance={"kind": "sds", "guidance_scale": 50})``.
    """
    cfg = load_txt2mesh_config(prompt, config, model, seed, values=values)
    return run_txt2mesh(cfg, output, resume=resume, progress=progress)


__all__ = ["Txt2MeshConfig", "load_txt2mesh_config", "run_txt2mesh", "txt2mesh"]
