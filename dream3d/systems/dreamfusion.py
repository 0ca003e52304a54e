"""DreamFusion as threestudio runs it: text to 3D by score distillation into a NeRF; with a mesh
geometry and renderer, Magic3D's fine stage.

Parts (each chosen by ``kind:`` in the config): a geometry (``geometry``: a hash-grid NeRF, or a
DMTet mesh), a renderer (``renderer``: volume rendering with an occupancy grid, or rasterisation
for a mesh) holding the geometry and a background (``background``), a material (``material``,
randomly shaded Lambertian) and a guidance (``guidance``: ``sds``, ``target`` or ``vsd``) on the frozen
prior. A stage that continues another (coarse to fine) starts its geometry from the earlier
stage's (``source``: ``geometry.create_from``). One training step:

1. every part's per-step hook (the renderer's occupancy-grid update);
2. ``cameras.batch`` random cameras (:class:`~dream3d.cameras.CameraSampling`);
3. the material's shader for this step (shading mode, lights);
4. render; the guidance turns the images and cameras into loss terms (weight 1);
5. regularisers, each with its weight (``regularizers``): orientation (after
   ``orientation_after`` steps), sparsity, opacity entropy (after ``entropy_after`` steps), and of
   a rendered mesh normal consistency and the Laplacian (:mod:`.regularizers`).

Every random draw comes from the trainer's generator, in that order. Module initialisation draws
from the global generator, seeded with the run's seed first.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..cameras import Camera, Cameras, CameraSampling
from ..errors import UserError
from ..export import ExportConfig, export_asset
from ..geometry import GEOMETRY
from ..geometry.nerf import NeRFConfig
from ..grid import make_grid
from ..guidance import GUIDANCE, GuidanceConfig, SDSConfig
from ..renderers import BACKGROUNDS, MATERIALS, RENDERERS
from ..renderers.backgrounds import BackgroundConfig, SolidBackgroundConfig
from ..renderers.materials import AlbedoShader, LambertianConfig
from ..renderers.volume import VolumeRendererConfig
from ..trainer import StepOutput
from .base import OptimConfig, System, weighted_sum
from .regularizers import (
    laplacian_loss,
    normal_consistency_loss,
    opacity_entropy_loss,
    orientation_loss,
    sparsity_loss,
)

VALIDATION_AZIMUTHS = (0.0, 90.0, 180.0, 270.0)


@dataclass(frozen=True)
class RegularizerConfig:
    """Weights of the regularisers (0: off) and the steps they start at."""

    orientation: float = 0.0
    orientation_after: int = 0
    sparsity: float = 0.0
    opacity_entropy: float = 0.0
    entropy_after: int = 0
    normal_consistency: float = 0.0  # a mesh's (renderer.kind: mesh)
    laplacian: float = 0.0  # a mesh's (renderer.kind: mesh)

    @property
    def on_mesh(self) -> bool:
        """Whether a regulariser of the rendered mesh is on."""
        return self.normal_consistency > 0 or self.laplacian > 0


@dataclass
class DreamFusionConfig:
    """The parts and loss weights of a DreamFusion run (the run's own settings extend it)."""

    renamed_keys = {"shading": "material"}  # the material's section before parts had kinds

    geometry: NeRFConfig = field(default_factory=NeRFConfig)
    renderer: VolumeRendererConfig = field(default_factory=VolumeRendererConfig)
    background: BackgroundConfig = field(default_factory=SolidBackgroundConfig)
    material: LambertianConfig = field(default_factory=LambertianConfig)
    guidance: GuidanceConfig = field(default_factory=SDSConfig)
    cameras: CameraSampling = field(default_factory=CameraSampling)
    optim: OptimConfig = field(default_factory=OptimConfig)
    regularizers: RegularizerConfig = field(default_factory=RegularizerConfig)
    val_size: int = 64  # validation views' size in pixels


class DreamFusion(System):
    """The DreamFusion system (module docstring) for ``prompt`` on the latent diffusion ``core``."""

    progress_keys = ("loss", "opacity")

    def __init__(self, cfg: DreamFusionConfig, prompt: str, core, device: torch.device, seed: int = 0, source=None):
        super().__init__()
        self.cfg, self.device = cfg, torch.device(device)
        torch.manual_seed(seed)  # module initialisation draws from the global generator
        if cfg.regularizers.on_mesh and cfg.renderer.kind != "mesh":
            raise UserError(
                "regularizers.normal_consistency and regularizers.laplacian act on a mesh; set them to 0 "
                f"or render a mesh (geometry.kind=dmtet renderer.kind=mesh), not renderer.kind={cfg.renderer.kind}"
            )
        kind = GEOMETRY[cfg.geometry.kind]
        geometry = kind(cfg.geometry, device=self.device) if source is None else kind.create_from(source, cfg.geometry)
        background = BACKGROUNDS[cfg.background.kind](cfg.background).to(self.device)
        self.renderer = RENDERERS[cfg.renderer.kind](geometry, background, cfg.renderer).to(self.device)
        self.material = MATERIALS[cfg.material.kind](cfg.material)
        self.guidance = GUIDANCE[cfg.guidance.kind](core, cfg.guidance, prompt)
        self._optimizers = {
            "scene": cfg.optim.adamw(geometry.param_groups() + background.param_groups() + self.renderer.param_groups())
        }
        guidance_optimizer = self.guidance.optimizer()
        if guidance_optimizer is not None:
            self._optimizers["guidance"] = guidance_optimizer

    @property
    def geometry(self):
        return self.renderer.geometry

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return self._optimizers

    def training_step(self, step: int, generator: torch.Generator) -> StepOutput:
        terms, logs = self.guided_terms(step, generator)
        return StepOutput(weighted_sum(terms), logs)

    def guided_terms(self, step: int, generator: torch.Generator) -> tuple[list[tuple[float, torch.Tensor]], dict]:
        """Steps 1-6 of the module docstring: the weighted loss terms of this step's random views
        (guidance, then regularisers) and their logs. A system that adds terms of its own (image to
        3D's reference view) appends them to these."""
        cfg, reg = self.cfg, self.cfg.regularizers
        self.renderer.train()
        for part in (self.geometry, self.renderer, self.guidance):
            part.update(step, generator)
        cameras = cfg.cameras.sample(generator, step).to(self.device)
        shader = self.material.training_shader(step, cameras, generator)
        want_orient = reg.orientation > 0 and step >= reg.orientation_after
        out = self.renderer(
            cameras,
            shader=shader,
            generator=generator,
            normals=want_orient,
            return_samples=want_orient or reg.on_mesh,
        )
        guided = self.guidance(out.images, cameras, step, generator)
        terms = [(1.0, term) for term in guided.terms.values()]
        logs = {"guidance": sum(t.item() for t in guided.terms.values()), **guided.logs, "mode": shader.mode}
        if want_orient:
            s = out.samples
            o_loss = orientation_loss(s["weights"], s["normals"], s["view_dirs"], s["ray_indices"], out.opacity.numel())
            terms.append((reg.orientation, o_loss))
            logs["orientation"] = o_loss.item()
        if reg.sparsity > 0:
            terms.append((reg.sparsity, sparsity_loss(out.opacity)))
        if reg.opacity_entropy > 0 and step >= reg.entropy_after:
            e = opacity_entropy_loss(out.opacity)
            terms.append((reg.opacity_entropy, e))
            logs["entropy"] = e.item()
        if reg.normal_consistency > 0:
            nc = normal_consistency_loss(out.samples["verts"], out.samples["faces"])
            terms.append((reg.normal_consistency, nc))
            logs["normal_consistency"] = nc.item()
        if reg.laplacian > 0:
            lap = laplacian_loss(out.samples["verts"], out.samples["faces"])
            terms.append((reg.laplacian, lap))
            logs["laplacian"] = lap.item()
        logs["opacity"] = out.opacity.mean().item()
        return terms, logs

    def validation_cameras(self) -> Cameras:
        s = self.cfg.val_size
        return Cameras.stack([Camera(15.0, a, 1.8, 50.0, s, s) for a in VALIDATION_AZIMUTHS])

    @torch.no_grad()
    def validation_image(self, step: int) -> np.ndarray:
        """RGB | normal | opacity rows of four views around the object (15 degrees up, albedo)."""
        return make_grid(self.validation_tiles(), cols=len(VALIDATION_AZIMUTHS))

    @torch.no_grad()
    def validation_tiles(self) -> torch.Tensor:
        """The validation grid's tiles ``(3 * views, H, W, 3)``: the views' RGB, normals, opacity."""
        self.renderer.eval()
        with torch.enable_grad():  # analytic normals differentiate the density
            out = self.renderer(self.validation_cameras(), shader=AlbedoShader(), normals=True)
        rgb = out.rgb.clamp(0, 1)
        normal = (out.normal * 0.5 + 0.5) * out.opacity + (1 - out.opacity)
        opacity = out.opacity.expand(*out.opacity.shape[:-1], 3)
        return torch.cat([rgb, normal.clamp(0, 1), opacity]).detach().cpu()

    def export(self, folder, cfg: ExportConfig = ExportConfig()) -> dict:
        """The asset: mesh files and turntable (:func:`~dream3d.export.export_asset`)."""
        self.renderer.eval()
        return export_asset(self.geometry, folder, cfg, renderer=self.renderer)
