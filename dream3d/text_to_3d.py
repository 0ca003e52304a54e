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
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from .config import load_config, save_config
from .diffusion.core import LatentDiffusion
from .diffusion.devices import dtype_name, resolve_device
from .errors import UserError
from .export import ExportConfig
from .geometry.dmtet import DMTetConfig
from .io import ensure_writable_dir, write_json
from .prior.vocabulary import warn_unknown_words
from .renderers.mesh import MeshRendererConfig
from .systems.dreamfusion import DreamFusion, DreamFusionConfig
from .trainer import Stage, StagedRun

CONFIG_DIR = Path(__file__).resolve().parent / "configs"  # shipped in the package; ./configs links here


@dataclass
class FineStageConfig(DreamFusionConfig):
    """The fine stage (Magic3D): the same system on a DMTet mesh started from the coarse NeRF,
    rasterised; every part's section is its own (nothing is inherited from the coarse stage)."""

    geometry: DMTetConfig = field(default_factory=DMTetConfig)
    renderer: MeshRendererConfig = field(default_factory=MeshRendererConfig)
    steps: int = 500
    val_every: int = 100
    checkpoint_every: int = 100


@dataclass
class RunSettings:
    """A run's own settings, shared by the commands that optimise a system and export its asset
    (``txt2mesh``, ``img2mesh``); a run's config extends its system's config with these."""

    model: str | None = None  # None: the command's bundled prior
    seed: int = 0
    steps: int = 1000
    device: str | None = None
    dtype: str | None = None
    export: ExportConfig = field(default_factory=ExportConfig)
    val_every: int = 200
    checkpoint_every: int = 200
    max_skipped_steps: int = 20  # consecutive non-finite steps before the run stops


@dataclass
class Txt2MeshConfig(RunSettings, DreamFusionConfig):
    """A text-to-3D run: the DreamFusion system's parts (inherited) and the run's own settings."""

    prompt: str = ""
    fine: FineStageConfig | None = None  # Magic3D's fine stage after this (coarse) one; None: none


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
    return load_run_config(Txt2MeshConfig, default_config_path, config, model, seed, overrides, values, prompt=prompt)


def load_run_config(
    cls: type,
    default: Callable[[str | None], Path],
    config: str | Path | None = None,
    model: str | None = None,
    seed: int | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    values: dict[str, Any] | None = None,
    **given: Any,
):
    """A run's config of class ``cls``: the file ``config`` (else ``default(model)``), then ``given``
    (what the run is of: its prompt, its image), ``model`` and ``seed`` when set and nested
    ``values``, then ``key=value`` overrides."""
    path = Path(config) if config is not None else default(model)
    given = {
        **given,
        **({"model": model} if model is not None else {}),
        **({"seed": seed} if seed is not None else {}),
        **(values or {}),
    }
    return load_config(cls, path, overrides, values=given)


def run_txt2mesh(
    cfg: Txt2MeshConfig,
    out: str | Path,
    resume: bool = False,
    progress: bool = True,
    start_from: str | Path | None = None,
    callback: Callable[[int, int, dict], None] | None = None,
    stop: threading.Event | None = None,
) -> dict:
    """Optimise, validate, checkpoint and export; returns ``metrics.json``'s content.

    With a ``fine`` section the coarse stage (a NeRF) is followed by the fine stage (a DMTet mesh
    started from it); the coarse stage's own mesh goes to ``coarse/``, the final asset to ``out``.
    ``start_from``: the folder of an earlier run whose finished coarse stage the fine stage starts
    from (only the fine stage runs here). Ctrl-C stops after the running step with a checkpoint,
    exports what the run has and writes ``metrics.json`` (``"interrupted": true``) before the
    interrupt propagates. ``callback(step, total, info)`` and ``stop`` (a ``threading.Event``):
    progress and a stop request from another thread, as :class:`~dream3d.trainer.Trainer` takes
    them (``info`` names the ``"stage"``); a stop ends the run as Ctrl-C does.
    """
    check_txt2mesh_config(cfg, start_from)
    out = ensure_writable_dir(out)
    device = resolve_device(cfg.device)
    coarse = None if start_from is None else load_finished_run(start_from, device, cfg.prompt)
    stages = []
    if coarse is None:
        stages.append(
            Stage(
                "coarse",
                cfg.steps,
                cfg.seed,
                build=lambda: DreamFusion(cfg, cfg.prompt, core, device, cfg.seed),
                finish=lambda task, trainer: _finish_stage(
                    task, trainer, out / "coarse" if cfg.fine else None, cfg.export
                ),
                desc="txt2mesh" if cfg.fine is None else "txt2mesh coarse",
                checkpoint_every=cfg.checkpoint_every,
                val_every=cfg.val_every,
                val_dir=out / "val",
                max_skipped_steps=cfg.max_skipped_steps,
            )
        )
    if cfg.fine is not None:
        fine = cfg.fine
        stages.append(
            Stage(
                "fine",
                fine.steps,
                cfg.seed,
                # the stage before this one has just finished: its system is run.task
                build=lambda: DreamFusion(
                    fine, cfg.prompt, core, device, cfg.seed, source=(coarse or run.task).geometry
                ),
                finish=lambda task, trainer: _finish_stage(task, trainer),
                desc="txt2mesh fine",
                checkpoint_every=fine.checkpoint_every,
                val_every=fine.val_every,
                val_dir=out / "val-fine",
                max_skipped_steps=cfg.max_skipped_steps,
            )
        )
    meta = {"prompt": cfg.prompt, "seed": cfg.seed}
    run = StagedRun(
        stages, out / "checkpoints", resume=resume, progress=progress, meta=meta, callback=callback, stop=stop
    )
    run.check_start(out)
    if cfg.model in (None, "shapes"):
        warn_unknown_words(cfg.prompt)
    core = (
        coarse.guidance.core
        if coarse is not None
        else LatentDiffusion.from_pretrained(cfg.model, device=device, dtype=cfg.dtype)
    )
    extra = {"started_from": str(start_from)} if start_from is not None else {}
    return run_and_export(cfg, out, run, core, meta, staged=cfg.fine is not None, extra=extra)


def run_and_export(
    cfg: RunSettings, out: Path, run: StagedRun, core, meta: dict, staged: bool = False, extra: dict | None = None
) -> dict:
    """Write ``config.yaml``, run the stages, export the last stage's asset and write
    ``metrics.json`` (``meta``: what the run is of, e.g. its prompt and seed, first; ``staged``:
    with each stage's record; ``extra``: appended); returns the metrics. Ctrl-C exports what the
    run has and writes ``metrics.json`` (``"interrupted": true``) before the interrupt propagates."""
    save_config(cfg, out / "config.yaml")
    try:
        stage_records = run.run()
    except KeyboardInterrupt:
        if run.task is not None:
            info = _export_quietly(run.task, out, cfg.export)
            write_json(out / "metrics.json", {**_metrics(meta, run, core, info), "interrupted": True})
        raise
    export_info = run.task.export(out, cfg.export)
    metrics = {**_metrics(meta, run, core, export_info, stage_records if staged else None), **(extra or {})}
    write_json(out / "metrics.json", metrics)
    return metrics


def check_txt2mesh_config(cfg: Txt2MeshConfig, start_from: str | Path | None = None) -> None:
    """The checks a run makes before it starts (a one-line :class:`UserError` each), for callers
    that check input before queueing it."""
    if not cfg.prompt.strip():
        raise UserError('the prompt is empty; pass some text, e.g. dream3d txt2mesh "a red cube"')
    for name, steps in [("steps", cfg.steps)] + ([("fine.steps", cfg.fine.steps)] if cfg.fine else []):
        if steps < 1:
            raise UserError(f"{name} must be at least 1, got {steps}")
    if "zero123" in (cfg.guidance.kind, cfg.fine.guidance.kind if cfg.fine else None):
        raise UserError("guidance.kind=zero123 is guided by an input image, not a prompt; use dream3d img2mesh IMAGE")
    if start_from is not None and cfg.fine is None:
        raise UserError("--from starts a fine stage, but this config has none; use configs/shapes-magic3d.yaml")


def load_finished_run(folder: str | Path, device="cpu", prompt: str | None = None) -> DreamFusion:
    """The coarse system of a finished txt2mesh run in ``folder`` (its ``config.yaml`` and
    ``checkpoints/coarse.pt``), on its own model; ``prompt``: the prompt the run must have."""
    folder = Path(folder)
    checkpoint, config = folder / "checkpoints" / "coarse.pt", folder / "config.yaml"
    if not checkpoint.is_file() or not config.is_file():
        raise UserError(f"'{folder}' holds no txt2mesh run (config.yaml, checkpoints/coarse.pt); pass a run folder")
    earlier = load_config(Txt2MeshConfig, config)
    if prompt is not None and earlier.prompt != prompt:
        raise UserError(f"the run in '{folder}' is for {earlier.prompt!r}, not {prompt!r}; use its prompt")
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    if state.get("step") != earlier.steps:
        raise UserError(
            f"the coarse stage in '{folder}' stopped at step {state.get('step')} of {earlier.steps}; "
            f"finish it first with dream3d txt2mesh ... -o {folder} --resume"
        )
    device = torch.device(device)
    core = LatentDiffusion.from_pretrained(earlier.model, device=device, dtype=earlier.dtype)
    system = DreamFusion(earlier, earlier.prompt, core, device, earlier.seed)
    system.load_state_dict(state["task"])
    return system


def _finish_stage(system: DreamFusion, trainer, export_to: Path | None = None, cfg: ExportConfig | None = None):
    """A finished stage's record for ``metrics.json``; with ``export_to``, also its mesh files there
    (the coarse stage of a coarse-to-fine run: ``coarse/``, no turntable)."""
    record = {
        "steps": trainer.step,
        "seconds": round(trainer.seconds, 1),
        "peak_memory_mb_so_far": round(_peak_mb(system.device)),
    }
    if export_to is not None:
        record["export"] = system.export(export_to, replace(cfg, turntable_formats=()))
    return record


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _export_quietly(system: DreamFusion, out: Path, cfg: ExportConfig) -> dict:
    try:
        return system.export(out, cfg)
    except UserError as e:  # e.g. nothing solid yet
        return {"error": str(e)}


def _metrics(meta: dict, run: StagedRun, core, export_info: dict, stages: dict | None = None) -> dict:
    """``metrics.json``: ``meta`` (the prompt or image, the seed), time, steps, memory, the final
    loss, the export's summary; ``stages``: each stage's record (a run of several stages)."""
    trainer, system = run.trainer, run.task
    last = trainer.history[-50:]
    staged = stages is not None
    stages = stages or {}
    return {
        **meta,
        "steps": sum(r["steps"] for r in stages.values()) if stages else trainer.step,
        "seconds": round(sum(r["seconds"] for r in stages.values()) if stages else trainer.seconds, 1),
        "steps_per_second": round(trainer.step / trainer.seconds, 3) if trainer.seconds else None,
        "peak_memory_mb": round(_peak_mb(system.device)),
        "device": str(system.device),
        "dtype": dtype_name(core.dtype),
        "model": core.source,
        **system.geometry.describe(),
        "skipped_steps": trainer.skipped,
        "final_loss": sum(h["loss"] for h in last) / max(1, len(last)),
        **({"stages": stages} if staged else {}),
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


__all__ = ["Txt2MeshConfig", "check_txt2mesh_config", "load_txt2mesh_config", "run_txt2mesh", "txt2mesh"]
