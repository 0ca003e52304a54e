"""Text to 3D, coarse stage (DreamFusion as threestudio runs it): ``dream3d txt2mesh``.

A run composes a geometry (:class:`~dream3d.nerf.field.NeRFField`), a material
(:mod:`dream3d.shading`), a background (:mod:`dream3d.nerf.background`), a renderer
(:class:`~dream3d.nerf.renderer.VolumeRenderer`) and a guidance
(:class:`~dream3d.guidance.sds.ScoreDistillation` on the latent diffusion core). Each step draws
random cameras (the one camera module), renders them, and lets the frozen prior pull the renders
towards the view-dependent prompt. Data flows one way: prompt -> guidance -> field -> renderer ->
exporter.

One seeded run = config + prompt -> output folder:
``config.yaml`` (resolved), ``checkpoints/last.pt`` (every ``checkpoint_every`` steps and on Ctrl-C),
``val/step-NNNNN.png`` (RGB | normal | opacity grids), ``mesh.glb/.obj/.ply``, ``turntable.mp4/.gif``,
``metrics.json`` (time, steps, peak memory, skipped steps). ``resume=True`` continues from the
checkpoint to the same result as an uninterrupted run: every random number comes from one
generator whose state is checkpointed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from .errors import UserError
from .guidance.sds import GuidanceConfig
from .nerf.export import ExportConfig
from .nerf.field import FieldConfig
from .nerf.renderer import RendererConfig
from .shading import ShadingConfig

CONFIG_DIR = Path(__file__).resolve().parent / "configs"  # shipped in the package; ./configs links here


@dataclass
class CameraConfig:
    """Random training cameras (the spec's ranges) and the render size."""

    height: int = 32
    width: int = 32
    batch: int = 2
    elevation_range: tuple[float, float] = (-10.0, 45.0)
    overhead_fraction: float = 0.15
    overhead_range: tuple[float, float] = (60.0, 80.0)
    distance_range: tuple[float, float] = (1.5, 2.0)
    fov_range: tuple[float, float] = (40.0, 70.0)


@dataclass
class BackgroundConfig:
    kind: Literal["solid", "random", "mlp"] = "solid"
    color: tuple[float, float, float] = (1.0, 1.0, 1.0)


@dataclass
class OptimConfig:
    lr_encoding: float = 1e-2
    lr_network: float = 1e-3
    lr_background: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.99)
    eps: float = 1e-15
    weight_decay: float = 0.0


@dataclass
class RegularizerConfig:
    orientation: float = 0.0
    orientation_after: int = 0  # start the orientation loss after this step
    sparsity: float = 0.0
    opacity_entropy: float = 0.0
    entropy_after: int = 0


@dataclass
class Txt2MeshConfig:
    prompt: str = ""
    model: str | None = None  # None: the bundled shapes prior
    seed: int = 0
    steps: int = 1000
    device: str | None = None
    dtype: str | None = None
    geometry: FieldConfig = field(default_factory=FieldConfig)
    renderer: RendererConfig = field(default_factory=RendererConfig)
    background: BackgroundConfig = field(default_factory=BackgroundConfig)
    shading: ShadingConfig = field(default_factory=ShadingConfig)
    guidance: GuidanceConfig = field(default_factory=GuidanceConfig)
    cameras: CameraConfig = field(default_factory=CameraConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    regularizers: RegularizerConfig = field(default_factory=RegularizerConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    val_every: int = 200
    val_size: int = 64
    checkpoint_every: int = 200
    max_skipped_steps: int = 20  # consecutive non-finite steps before the run stops


def default_config_path(model: str | None) -> Path:
    """``configs/shapes-dreamfusion.yaml`` for the bundled prior, ``configs/dreamfusion-sd.yaml`` otherwise."""
    return CONFIG_DIR / ("shapes-dreamfusion.yaml" if model in (None, "shapes") else "dreamfusion-sd.yaml")


class Txt2MeshRun:
    """The composed system of one run and its optimisation loop."""

    def __init__(self, cfg: Txt2MeshConfig, out: str | Path, progress: bool = True):
        from .diffusion.core import LatentDiffusion
        from .diffusion.devices import resolve_device
        from .guidance.sds import ScoreDistillation
        from .io import ensure_writable_dir
        from .nerf.background import MLPBackground, SolidBackground
        from .nerf.field import NeRFField
        from .nerf.renderer import VolumeRenderer

        if not cfg.prompt.strip():
            raise UserError('the prompt is empty; pass some text, e.g. dream3d txt2mesh "a red cube"')
        if cfg.steps < 1:
            raise UserError(f"steps must be at least 1, got {cfg.steps}")
        self.cfg, self.progress = cfg, progress
        self.out = ensure_writable_dir(out)
        self.device = resolve_device(cfg.device)
        self.core = LatentDiffusion.from_pretrained(cfg.model, device=self.device, dtype=cfg.dtype)
        self.guidance = ScoreDistillation(self.core, cfg.guidance)
        torch.manual_seed(cfg.seed)  # module initialisation draws from the global generator
        self.field = NeRFField(cfg.geometry, device=self.device)
        if cfg.background.kind == "mlp":
            self.background = MLPBackground().to(self.device)
        else:
            self.background = SolidBackground(color=tuple(cfg.background.color), random_colors=cfg.background.kind == "random")
        self.renderer = VolumeRenderer(self.field, background=self.background, cfg=cfg.renderer).to(self.device)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.optimizer = self._optimizer()
        self.step = 0
        self.history: list[dict] = []
        self.skipped: list[int] = []
        self.seconds = 0.0

    # ---------------------------------------------------------------- set-up
    def _optimizer(self) -> torch.optim.Optimizer:
        o = self.cfg.optim
        enc = [p for n, p in self.field.named_parameters() if n.startswith("encoding")]
        net = [p for n, p in self.field.named_parameters() if not n.startswith("encoding")]
        groups = [{"params": enc, "lr": o.lr_encoding}, {"params": net, "lr": o.lr_network}]
        bg = list(self.background.parameters())
        if bg:
            groups.append({"params": bg, "lr": o.lr_background})
        return torch.optim.AdamW(groups, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay)

    # ---------------------------------------------------------------- checkpoints
    @property
    def checkpoint_path(self) -> Path:
        return self.out / "checkpoints" / "last.pt"

    def state_dict(self) -> dict:
        return {"step": self.step, "renderer": self.renderer.state_dict(), "optimizer": self.optimizer.state_dict(),
                "generator": self.generator.get_state(), "history": self.history, "skipped": self.skipped,
                "seconds": self.seconds, "prompt": self.cfg.prompt, "seed": self.cfg.seed}

    def save_checkpoint(self) -> None:
        from .io import atomic_path

        with atomic_path(self.checkpoint_path) as tmp:
            torch.save(self.state_dict(), tmp)

    def load_checkpoint(self) -> None:
        if not self.checkpoint_path.is_file():
            raise UserError(f"no checkpoint to resume in '{self.out}'; run without --resume to start")
        state = torch.load(self.checkpoint_path, map_location=self.device, weights_only=False)
        if state["prompt"] != self.cfg.prompt or state["seed"] != self.cfg.seed:
            raise UserError(f"the checkpoint in '{self.out}' is for prompt {state['prompt']!r} seed {state['seed']}; "
                            f"use the same prompt and seed, or another -o")
        self.renderer.load_state_dict(state["renderer"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.step, self.history, self.skipped, self.seconds = state["step"], state["history"], state["skipped"], state["seconds"]

    # ---------------------------------------------------------------- one step
    def sample_cameras(self):
        from .shapes.camera import sample_cameras

        c = self.cfg.cameras
        return sample_cameras(c.batch, self.generator, height=c.height, width=c.width,
                              elevation_range=tuple(c.elevation_range), overhead_fraction=c.overhead_fraction,
                              overhead_range=tuple(c.overhead_range), distance_range=tuple(c.distance_range),
                              fov_range=tuple(c.fov_range))

    def train_step(self) -> dict:
        """One optimisation step; returns its log (loss terms, t, shading mode)."""
        from .guidance.prompts import view_prompts
        from .regularizers import opacity_entropy_loss, orientation_loss, sparsity_loss
        from .shading import ShadingMaterial, light_positions, pick_mode
        from .shapes.camera import rays_batch, stack_cameras

        cfg, step = self.cfg, self.step
        self.renderer.train()
        self.renderer.update_grid(step, self.generator)
        cams = self.sample_cameras()
        c2w, focal = stack_cameras(cams)
        c2w, focal = c2w.to(self.device), focal.to(self.device)
        H, W, B = cfg.cameras.height, cfg.cameras.width, len(cams)
        rays_o, rays_d = rays_batch(c2w, focal, H, W)
        mode = pick_mode(cfg.shading, step, self.generator)
        lights = light_positions(c2w[:, :3, 3], cfg.shading, self.generator)
        material = ShadingMaterial(mode, cfg.shading, lights, H * W)
        reg = cfg.regularizers
        want_orient = reg.orientation > 0 and step >= reg.orientation_after
        image_index = torch.arange(B, device=self.device)[:, None, None].expand(B, H, W)
        out = self.renderer(rays_o, rays_d, generator=self.generator, image_index=image_index, material=material,
                            normals=want_orient, return_samples=want_orient)
        images = out["rgb"].permute(0, 3, 1, 2)
        prompts = view_prompts(cfg.prompt, [c.elevation_deg for c in cams], [c.azimuth_deg for c in cams],
                               cfg.guidance.view_prompts)
        loss, info = self.guidance.loss(images, prompts, step, self.generator)
        log = {"guidance": loss.item(), **info, "mode": mode}
        if want_orient:
            s = out["samples"]
            o_loss = orientation_loss(s["weights"], s["normals"], s["view_dirs"], s["ray_indices"], B * H * W)
            loss = loss + reg.orientation * o_loss
            log["orientation"] = o_loss.item()
        opacity = out["opacity"]
        if reg.sparsity > 0:
            loss = loss + reg.sparsity * sparsity_loss(opacity)
        if reg.opacity_entropy > 0 and step >= reg.entropy_after:
            e = opacity_entropy_loss(opacity)
            loss = loss + reg.opacity_entropy * e
            log["entropy"] = e.item()
        log["loss"] = loss.item()
        log["opacity"] = opacity.mean().item()
        self.optimizer.zero_grad(set_to_none=True)
        if not torch.isfinite(loss):
            return {**log, "skipped": True}
        loss.backward()
        grads = [p.grad for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
        if not all(torch.isfinite(g).all() for g in grads):
            self.optimizer.zero_grad(set_to_none=True)
            return {**log, "skipped": True}
        self.optimizer.step()
        return log

    # ---------------------------------------------------------------- loop
    def fit(self) -> None:
        from tqdm.auto import tqdm

        cfg = self.cfg
        bar = tqdm(total=cfg.steps, initial=self.step, desc="txt2mesh", unit="step", disable=not self.progress)
        t0 = time.perf_counter() - self.seconds
        consecutive = 0
        try:
            while self.step < cfg.steps:
                gen_state = self.generator.get_state()
                try:
                    log = self.train_step()
                except KeyboardInterrupt:
                    self.generator.set_state(gen_state)  # the unfinished step is redone on resume
                    raise
                if log.get("skipped"):
                    self.skipped.append(self.step)
                    consecutive += 1
                    bar.write(f"step {self.step}: non-finite loss or gradient, step skipped")
                    if consecutive >= cfg.max_skipped_steps:
                        raise UserError(f"{consecutive} steps in a row gave non-finite values (last at step {self.step}); "
                                        f"lower the learning rates or guidance scale")
                else:
                    consecutive = 0
                self.step += 1
                self.seconds = time.perf_counter() - t0
                self.history.append({"step": self.step, **{k: v for k, v in log.items() if k != "skipped"}})
                bar.update()
                bar.set_postfix(loss=f"{log['loss']:.4g}", opacity=f"{log['opacity']:.2f}")
                if cfg.val_every and self.step % cfg.val_every == 0:
                    self.validate()
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                    self.save_checkpoint()
        except KeyboardInterrupt:
            self.seconds = time.perf_counter() - t0
            self.save_checkpoint()
            raise
        finally:
            bar.close()
        self.save_checkpoint()

    # ---------------------------------------------------------------- outputs
    @torch.no_grad()
    def validate(self) -> Path:
        """RGB | normal | opacity of four fixed views, saved as ``val/step-NNNNN.png``."""
        from .grid import make_grid
        from .io import save_image
        from .nerf.renderer import render_camera
        from .shading import ShadingMaterial
        from .shapes.camera import Camera

        self.renderer.eval()
        s = self.cfg.val_size
        cams = [Camera(15.0, a, 1.8, 50.0, s, s) for a in (0.0, 90.0, 180.0, 270.0)]
        material = ShadingMaterial("albedo", self.cfg.shading)
        with torch.enable_grad():  # analytic normals differentiate the density
            out = render_camera(self.renderer, cams, material=material, normals=True)
        rgb = out["rgb"].clamp(0, 1)
        normal = (out["normal"] * 0.5 + 0.5) * out["opacity"] + (1 - out["opacity"])
        opacity = out["opacity"].expand(*out["opacity"].shape[:-1], 3)
        tiles = torch.cat([rgb, normal.clamp(0, 1), opacity]).detach().cpu()
        path = self.out / "val" / f"step-{self.step:05d}.png"
        save_image(path, make_grid(tiles, cols=len(cams)))
        return path

    def export(self) -> dict:
        from .nerf.export import export_field

        self.renderer.eval()
        return export_field(self.field, self.out, self.cfg.export, renderer=self.renderer)

    def metrics(self, export_info: dict | None) -> dict:
        from .diffusion.devices import dtype_name

        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            import resource

            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        last = self.history[-50:]
        return {
            "prompt": self.cfg.prompt, "seed": self.cfg.seed, "steps": self.step, "seconds": round(self.seconds, 1),
            "steps_per_second": round(self.step / self.seconds, 3) if self.seconds else None,
            "peak_memory_mb": round(peak), "device": str(self.device), "dtype": dtype_name(self.core.dtype),
            "model": self.core.source, "encoding_backend": self.field.encoding.backend, "skipped_steps": self.skipped,
            "final_loss": sum(h["loss"] for h in last) / max(1, len(last)),
            "export": export_info,
        }


def run_txt2mesh(cfg: Txt2MeshConfig, out: str | Path, resume: bool = False, progress: bool = True) -> dict:
    """Optimise, validate, checkpoint and export; returns ``metrics.json``'s content.

    Ctrl-C saves a checkpoint and exports what the run has before the interrupt propagates.
    """
    from .config import save_config
    from .io import write_json

    run = Txt2MeshRun(cfg, out, progress)
    if resume:
        run.load_checkpoint()
    elif run.checkpoint_path.is_file():
        raise UserError(f"'{run.out}' already holds a run of this command; pass --resume to continue it or choose another -o")
    save_config(cfg, run.out / "config.yaml")
    try:
        run.fit()
    except KeyboardInterrupt:
        info = _export_quietly(run)
        write_json(run.out / "metrics.json", {**run.metrics(info), "interrupted": True})
        raise
    if not cfg.val_every or run.step % cfg.val_every:
        run.validate()
    info = run.export()
    metrics = run.metrics(info)
    write_json(run.out / "metrics.json", metrics)
    return metrics


def _export_quietly(run: Txt2MeshRun) -> dict | None:
    try:
        return run.export()
    except UserError as e:  # e.g. nothing solid yet
        return {"error": str(e)}


def load_txt2mesh_config(prompt: str, config: str | Path | None = None, model: str | None = None,
                         seed: int | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Txt2MeshConfig:
    """The config of a run: the file (default: by model), then ``prompt``/``model``/``seed``, then overrides."""
    from .config import load_config

    path = Path(config) if config is not None else default_config_path(model)
    extra = [f"prompt={_yaml_str(prompt)}"] + ([f"model={_yaml_str(model)}"] if model is not None else [])
    extra += [f"seed={seed}"] if seed is not None else []
    return load_config(Txt2MeshConfig, path, extra + list(overrides))


def _yaml_str(text: str) -> str:
    import json

    return json.dumps(text)  # a JSON string is a YAML string: quotes, colons and commas survive


def txt2mesh(prompt: str, output: str | Path, config: str | Path | None = None, model: str | None = None,
             seed: int = 0, resume: bool = False, progress: bool = True, **overrides) -> dict:
    """Python face of ``dream3d txt2mesh``; ``overrides`` use dotted keys with ``__``:
    ``txt2mesh("a red cube", "out", steps=500, guidance__guidance_scale=50)``."""
    items = [f"{k.replace('__', '.')}={v!r}" if isinstance(v, str) else f"{k.replace('__', '.')}={v}"
             for k, v in overrides.items()]
    cfg = load_txt2mesh_config(prompt, config, model, seed, items)
    return run_txt2mesh(cfg, output, resume=resume, progress=progress)


__all__ = ["Txt2MeshConfig", "run_txt2mesh", "txt2mesh", "load_txt2mesh_config"]
