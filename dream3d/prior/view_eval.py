"""Score a view-conditioned (Zero-1-to-3) model on the shapes world: ``dream3d prior eval --kind view``.

Every object is rendered at the held-out conditioning camera (:data:`~dream3d.prior.view_data.HELD_OUT_CAMERA`,
framed to the model's ``object_fraction`` as at inference) and the model samples it from the other
held-out cameras (:data:`~dream3d.prior.view_data.HELD_OUT_CAMERAS`, never used in training), seeded,
with classifier-free guidance (default 3.0). Each sample is scored against the ground-truth render at
that camera (32 px, the renders the prior was trained on):

- **PSNR** (dB, images in [0, 1]);
- **silhouette IoU**: the object is where a pixel is not white, i.e. its darkest channel is below
  ``1 - white_tolerance`` (0.9 by default: anti-aliased edge pixels count from about 15% coverage;
  every shapes colour has a channel at or below 0.2);
- **shape** and **colour**: the bundled classifier (:mod:`dream3d.prior.classifier`, trained on
  ground-truth renders only) reads the sample; it must name the object's shape and colour.

Targets: mean silhouette IoU >= 0.7, shape >= 90%, colour >= 95%. ``baseline`` holds the same
measures for the conditioning image itself taken as the answer (what a model that ignores the camera
would score).

**The turn check** (``turn`` in ``eval.json``): four of the five shapes look the same from every
azimuth, so the means above barely see whether a model turns the object by the relative azimuth.
The cube does: each cube, conditioned at the same camera, is sampled ``turn_samples`` times at the
conditioning elevation and relative azimuths 45, 135, 225 and 315 degrees (where a cube's turn shows
most), and each sample's silhouette is compared with the truth there (``turned``) and with the truth
at the conditioning camera (``unturned``: what a model that ignores the azimuth draws). A model that
uses the azimuth scores ``turned`` above ``unturned``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..config import to_dict
from ..diffusion.zero123 import ViewDiffusion
from ..errors import UserError
from ..grid import make_grid
from ..io import ensure_writable_dir, save_image, write_json
from ..shapes.objects import COLOURS, SHAPES, all_objects
from ..shapes.render import render
from .classifier import load_classifier
from .evaluate import bundled_classifier_path
from .view_data import HELD_OUT_CAMERAS, VIEW_DISTANCE, held_out_camera, render_view

VIEW_TARGETS = {"silhouette_iou": 0.7, "shape": 0.90, "colour": 0.95}


@dataclass
class ViewEvalConfig:
    model: str | None = None  # None: the bundled view prior (shapes-view)
    steps: int = 20
    scheduler: str = "dpm"
    guidance: float = 3.0
    seed: int = 0
    objects: int = 30  # the first N of the 30 objects (tests use fewer)
    targets: int = len(HELD_OUT_CAMERAS) - 1  # the first N held-out target cameras
    white_tolerance: float = 0.1
    device: str | None = None
    classifier: str | None = None  # None: the bundled classifier
    threads: int = 0  # 0: torch's default (on a CPU shared with other work, 1 is often faster)
    turn_samples: int = 4  # samples per cube and relative azimuth in the turn check (0: no turn check)

    def __post_init__(self):
        if not 1 <= self.objects <= 30:
            raise UserError(f"objects must be in 1..30, got {self.objects}")
        if not 1 <= self.targets <= len(HELD_OUT_CAMERAS) - 1:
            raise UserError(f"targets must be in 1..{len(HELD_OUT_CAMERAS) - 1}, got {self.targets}")


def silhouette(images: torch.Tensor, tolerance: float) -> torch.Tensor:
    """(B, H, W) bool: pixels whose darkest channel is below ``1 - tolerance`` (not white)."""
    return images.amin(dim=1) < 1.0 - tolerance


def measures(pred: torch.Tensor, truth: torch.Tensor, tolerance: float) -> dict[str, torch.Tensor]:
    """Per-image PSNR and silhouette IoU of ``pred`` against ``truth`` (both (B, 3, H, W) in [0, 1])."""
    mse = (pred - truth).square().mean(dim=(1, 2, 3)).clamp_min(1e-10)
    a, b = silhouette(pred, tolerance), silhouette(truth, tolerance)
    union = (a | b).sum(dim=(1, 2)).clamp_min(1)
    return {"psnr": 10 * torch.log10(1.0 / mse), "silhouette_iou": (a & b).sum(dim=(1, 2)) / union}


TURN_AZIMUTHS = (45.0, 135.0, 225.0, 315.0)  # relative azimuths of the turn check (degrees)


def sample_views(core, images: torch.Tensor, cond_cam, cams, cfg: ViewEvalConfig, seed: int, progress=False):
    """Samples of conditioning ``images`` seen from ``cond_cam`` at ``cams`` (the images in rows of
    ``len(cams)``, one per camera in order), with the eval's sampler, steps and CFG, seeded."""
    n = len(cams)
    camera = core.relative_camera(
        (cond_cam.elevation_deg, cond_cam.azimuth_deg, VIEW_DISTANCE),
        ([c.elevation_deg for c in cams], [c.azimuth_deg for c in cams], [VIEW_DISTANCE] * n),
    ).repeat(len(images) // n, 1)
    return core.sample(
        images,
        camera,
        num_steps=cfg.steps,
        guidance_scale=cfg.guidance,
        scheduler=cfg.scheduler,
        generator=torch.Generator("cpu").manual_seed(seed),
        progress=progress,
    )


def turn_scores(samples: torch.Tensor, objects, target_cams, cond_cam, tolerance: float) -> dict:
    """Mean silhouette IoU of ``samples`` (one per (object, target camera), object-major; any
    number of repeats of that order) with the truth at the target cameras (``turned``) and at
    ``cond_cam`` (``unturned``)."""

    def truth(obj, cam):
        return torch.from_numpy(render(obj, cam, ss=4).rgb).permute(2, 0, 1).float()

    turned = torch.stack([truth(o, c) for o in objects for c in target_cams])
    unturned = torch.stack([truth(o, cond_cam) for o in objects for c in target_cams])
    reps = len(samples) // len(turned)
    pred = silhouette(samples, tolerance)

    def iou(b: torch.Tensor) -> float:
        b = silhouette(b, tolerance).repeat(reps, 1, 1)
        return float(((pred & b).sum(dim=(1, 2)) / (pred | b).sum(dim=(1, 2)).clamp_min(1)).mean())

    return {"turned": iou(turned), "unturned": iou(unturned)}


def turn_check(core, objects, conditions: list[torch.Tensor], cond_cam, cfg) -> dict | None:
    """The turn check (module docstring) on the cubes among ``objects`` (``conditions``: their
    framed conditioning images), or ``None`` without a cube."""
    cubes = [k for k, o in enumerate(objects) if o.shape == "cube"]
    if not cubes or cfg.turn_samples < 1:
        return None
    cams = [replace(cond_cam, azimuth_deg=cond_cam.azimuth_deg + a) for a in TURN_AZIMUTHS]
    images = torch.stack([conditions[k] for k in cubes]).repeat_interleave(len(cams), dim=0)
    samples = sample_views(core, images.repeat(cfg.turn_samples, 1, 1, 1), cond_cam, cams, cfg, cfg.seed + 1)
    scores = turn_scores(samples.float().cpu(), [objects[k] for k in cubes], cams, cond_cam, cfg.white_tolerance)
    return {"samples": len(samples), "relative_azimuths": list(TURN_AZIMUTHS), **scores}


def evaluate_view_prior(cfg: ViewEvalConfig, out: str | Path, progress: bool = True) -> dict:
    """Sample, score; writes ``eval.json`` and ``samples.png`` to ``out``."""
    out = ensure_writable_dir(out)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    path = Path(cfg.classifier) if cfg.classifier else bundled_classifier_path()
    if not path.is_file():
        raise UserError(f"classifier '{path}' does not exist; train one with 'dream3d prior eval' (--kind text) first")
    classifier = load_classifier(path)
    core = ViewDiffusion.from_pretrained(cfg.model, device=cfg.device)
    size = core.default_size
    objects = all_objects()[: cfg.objects]
    cond_cam = held_out_camera(0, size)
    target_cams = [held_out_camera(i + 1, size) for i in range(cfg.targets)]
    conditions, truths = [], []
    for obj in objects:
        _, condition, _ = render_view(obj, cond_cam, core.object_fraction)
        conditions.append(torch.from_numpy(condition).permute(2, 0, 1).float() / 255.0)
        truths += [torch.from_numpy(render(obj, cam, ss=4).rgb).permute(2, 0, 1) for cam in target_cams]
    n = cfg.targets
    cond_images = torch.stack(conditions).repeat_interleave(n, dim=0)
    truth = torch.stack(truths).float()
    t0 = time.perf_counter()
    samples = sample_views(core, cond_images, cond_cam, target_cams, cfg, cfg.seed, progress)
    sample_s = time.perf_counter() - t0
    samples = samples.float().cpu()

    colours = list(COLOURS)
    want_shape = torch.tensor([SHAPES.index(o.shape) for o in objects]).repeat_interleave(n)
    want_colour = torch.tensor([colours.index(o.colour) for o in objects]).repeat_interleave(n)

    def score(images: torch.Tensor) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
        m = measures(images, truth, cfg.white_tolerance)
        read = classifier.predict(images)
        m["shape"] = (read["shape"] == want_shape).float()
        m["colour"] = (read["colour"] == want_colour).float()
        return {k: float(v.mean()) for k, v in m.items()}, m

    scores, per_sample = score(samples)
    baseline, per_baseline = score(cond_images)
    truth_read, _ = score(truth)

    def by_camera(values):
        return {
            f"{c.elevation_deg:g},{c.azimuth_deg:g}": {k: float(v[i::n].mean()) for k, v in values.items()}
            for i, c in enumerate(target_cams)
        }

    def by_shape(values):
        return {
            s: {k: float(v[want_shape == j].mean()) for k, v in values.items()}
            for j, s in enumerate(SHAPES)
            if (want_shape == j).any()
        }

    tiles = []
    for k in range(len(objects)):
        tiles.append(conditions[k][None])
        for i in range(n):
            tiles += [samples[k * n + i][None], truth[k * n + i][None]]
    save_image(out / "samples.png", make_grid(torch.cat(tiles), cols=1 + 2 * n))
    record = {
        "config": to_dict(cfg),
        "model": core.describe(),
        "samples": len(samples),
        "sample_seconds": round(sample_s, 1),
        "conditioning_camera": {"elevation": cond_cam.elevation_deg, "azimuth": cond_cam.azimuth_deg},
        "target_cameras": [{"elevation": c.elevation_deg, "azimuth": c.azimuth_deg} for c in target_cams],
        "distance": VIEW_DISTANCE,
        "fov": cond_cam.fov_deg,
        "scores": scores,
        "targets": VIEW_TARGETS,
        "passed": {k: scores[k] >= v for k, v in VIEW_TARGETS.items()},
        "baseline_conditioning_image": baseline,
        "ground_truth_read": {"shape": truth_read["shape"], "colour": truth_read["colour"]},
        "by_target_camera": by_camera(per_sample),
        "by_shape": by_shape(per_sample),
        "baseline_by_target_camera": by_camera(per_baseline),
        "baseline_by_shape": by_shape(per_baseline),
        "turn": turn_check(core, objects, conditions, cond_cam, cfg),
        "classifier": str(path),
        "grid": "samples.png (rows: objects; columns: the conditioning image, then per target camera: sample, truth)",
    }
    write_json(out / "eval.json", record)
    return record


def format_view_table(record: dict) -> str:
    s, b = record["scores"], record["baseline_conditioning_image"]
    lines = ["| measure | model | conditioning image as the answer | target |", "|---|---|---|---|"]
    lines.append(f"| PSNR | {s['psnr']:.2f} dB | {b['psnr']:.2f} dB | - |")
    for key, name in (("silhouette_iou", "silhouette IoU"), ("shape", "shape"), ("colour", "colour")):
        target = record["targets"][key]
        if key == "silhouette_iou":
            lines.append(f"| {name} | {s[key]:.3f} | {b[key]:.3f} | >= {target:.2f} |")
        else:
            lines.append(f"| {name} | {s[key] * 100:.1f}% | {b[key] * 100:.1f}% | >= {target * 100:.0f}% |")
    turn = record.get("turn")
    if turn:
        lines.append(
            f"turn check ({turn['samples']} cube samples at relative azimuths 45-315): silhouette IoU with the "
            f"turned view {turn['turned']:.3f}, with the unturned view {turn['unturned']:.3f} (using the azimuth: turned higher)"
        )
    return "\n".join(lines)
