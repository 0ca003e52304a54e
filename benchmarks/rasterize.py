"""Mesh rasterisation forward + backward on the CPU: our bounding-box z-buffer vs a dense one.

The mesh: two subdivision-4 icospheres of radius 0.5 (10,240 faces, 5,124 vertices), the second
moved so that it hides part of the first (occlusion and silhouettes over faces, not only over the
background). Cameras orbit at distance 2 with a 50-degree field of view, ``--size`` pixels square.

One step is what a Magic3D-style fine stage does per view batch: ``rasterize_mesh`` with a
per-vertex colour (interpolated, composited, anti-aliased, plus normals and the anti-aliased
mask), the loss ``mean(rgb^2) + mean(opacity)``, and its backward to the vertex positions and
colours.

- "ours" (``dream3d.renderers.rasterize``, the PyTorch backend): each face visits only the pixels
  of its clamped bounding box; a scatter-min z-buffer over those face-pixel pairs.
- "dense" (the baseline, written here): every face against every pixel - edge functions and depth
  for the whole ``faces x pixels`` grid in chunks of faces, an argmin over faces (ties to the
  smaller face id, as ours). The winners then go through the same differentiable pass and
  anti-aliasing as ours, so the two differ only in how the visible face is found.

Before timing, the two are checked to find the same visible face at every pixel. Reported: median
milliseconds per step (forward, backward, total) over ``--repeats`` runs, alternating the two
sides within each repeat, per batch size and torch thread count; the target (150 ms for 10k faces
at 64 px) as a ratio; the load average, since other jobs may share the machine.

    OMP_NUM_THREADS=1 python benchmarks/rasterize.py                 # batch 1 and 2, 1 and 2 threads
    OMP_NUM_THREADS=1 python benchmarks/rasterize.py --size 128 --batches 1,4
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import machine, median, peak_rss_mb, print_table, write_results  # noqa: E402

from dream3d.cameras import Camera, Cameras  # noqa: E402
from dream3d.renderers.rasterize import (  # noqa: E402
    RasterizerConfig,
    antialias,
    face_normals,
    interpolate,
    project_screen,
    raster_from_winners,
    rasterize_mesh,
)

TARGET_MS = 150.0


def two_spheres() -> tuple[torch.Tensor, torch.Tensor]:
    """10,240 faces: two subdivision-4 icospheres, the second in front of part of the first."""
    import trimesh

    a = trimesh.creation.icosphere(subdivisions=4, radius=0.5)
    b = trimesh.creation.icosphere(subdivisions=4, radius=0.3)
    b.apply_translation([0.45, 0.35, 0.15])
    mesh = trimesh.util.concatenate([a, b])
    return torch.tensor(mesh.vertices, dtype=torch.float32), torch.tensor(mesh.faces, dtype=torch.long)


@torch.no_grad()
def dense_winners(screen, faces, height, width, near, chunk_pairs=1 << 21):
    """The visible (pixel, face) pairs by brute force: edge functions and perspective-correct depth
    of every face at every pixel centre (float64, chunks of faces), then the nearest face per pixel
    (the first, so the smallest id, among equal depths)."""
    B, n_faces = screen.shape[0], faces.shape[0]
    tri = screen.double()[:, faces]  # (B, F, 3, 3)
    x, y, d = tri[..., 0], tri[..., 1], tri[..., 2]
    area = (x[..., 1] - x[..., 0]) * (y[..., 2] - y[..., 0]) - (y[..., 1] - y[..., 0]) * (x[..., 2] - x[..., 0])
    keep = (d > near).all(-1) & (area != 0)
    v, u = torch.meshgrid(torch.arange(height).double() + 0.5, torch.arange(width).double() + 0.5, indexing="ij")
    u, v = u.reshape(1, 1, -1), v.reshape(1, 1, -1)  # (1, 1, P)
    best = torch.full((B, height * width), float("inf"), dtype=torch.float64)
    best_face = torch.full((B, height * width), -1, dtype=torch.long)
    step = max(1, chunk_pairs // (B * height * width))
    for f0 in range(0, n_faces, step):
        sl = slice(f0, f0 + step)
        xs, ys, ds, a = x[:, sl, :, None], y[:, sl, :, None], d[:, sl, :, None], area[:, sl, None]
        w0 = (xs[:, :, 2] - xs[:, :, 1]) * (v - ys[:, :, 1]) - (ys[:, :, 2] - ys[:, :, 1]) * (u - xs[:, :, 1])
        w1 = (xs[:, :, 0] - xs[:, :, 2]) * (v - ys[:, :, 2]) - (ys[:, :, 0] - ys[:, :, 2]) * (u - xs[:, :, 2])
        w2 = (xs[:, :, 1] - xs[:, :, 0]) * (v - ys[:, :, 0]) - (ys[:, :, 1] - ys[:, :, 0]) * (u - xs[:, :, 0])
        sign = torch.sign(a)
        inside = (w0 * sign >= -1e-7) & (w1 * sign >= -1e-7) & (w2 * sign >= -1e-7) & keep[:, sl, None]
        depth = a / (w0 / ds[:, :, 0] + w1 / ds[:, :, 1] + w2 / ds[:, :, 2])
        depth = torch.where(inside, depth, float("inf"))
        z, k = depth.min(1)  # (B, P): first index among equal minima
        better = z < best
        best = torch.where(better, z, best)
        best_face = torch.where(better, k + f0, best_face)
    flat = best_face.reshape(-1)
    pixel_index = torch.nonzero(flat >= 0).squeeze(1)
    return pixel_index, flat[pixel_index]


def dense_rasterize_mesh(verts, faces, cameras, colours, cfg):
    """What ``rasterize_mesh`` computes for this benchmark, with the dense z-buffer."""
    screen = project_screen(verts, cameras)
    pixel_index, pixel_face = dense_winners(screen.detach(), faces, cameras.height, cameras.width, cfg.near)
    raster = raster_from_winners(screen, faces, pixel_index, pixel_face, cameras.height, cameras.width)
    mask = raster.mask
    rgb = mask * interpolate(colours, raster)
    normal = face_normals(verts, faces)[raster.face_id.clamp(min=0)] * mask
    out = antialias(torch.cat([rgb, normal, mask], -1), raster)
    return {"rgb": out[..., :3], "normal": out[..., 3:6], "opacity": out[..., 6:], "raster": raster}


def make_step(render, verts, faces, cameras, colours, cfg):
    v = verts.clone().requires_grad_(True)
    c = colours.clone().requires_grad_(True)

    def step():
        v.grad = c.grad = None
        t0 = time.perf_counter()
        out = render(v, faces, cameras, c, cfg)
        loss = out["rgb"].square().mean() + out["opacity"].mean()
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        return out, t1 - t0, t2 - t1

    return step


def ours(verts, faces, cameras, colours, cfg):
    return rasterize_mesh(verts, faces, cameras, {"rgb": colours}, cfg=cfg)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=64, help="image height and width (pixels)")
    p.add_argument("--batches", default="1,2", help="comma list of camera batch sizes")
    p.add_argument("--threads", default="1,2", help="comma list of torch CPU thread counts")
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args()

    verts, faces = two_spheres()
    colours = torch.rand(len(verts), 3, generator=torch.Generator().manual_seed(0))
    cfg = RasterizerConfig(backend="torch")
    rows, results = [], []
    load_before = os.getloadavg()
    for batch in (int(b) for b in args.batches.split(",")):
        cams = Cameras.stack([Camera(15.0, 20.0 + 70.0 * i, 2.0, 50.0, args.size, args.size) for i in range(batch)])
        sides = {
            "ours (bbox + scatter-min)": make_step(ours, verts, faces, cams, colours, cfg),
            "dense (all faces x pixels)": make_step(dense_rasterize_mesh, verts, faces, cams, colours, cfg),
        }
        (a, _, _), (b, _, _) = (side() for side in sides.values())
        if not torch.equal(a["raster"].face_id, b["raster"].face_id):
            raise SystemExit("ours and the dense z-buffer disagree on the visible faces")
        check = {
            "same_face_ids": True,
            "max_abs_rgb_diff": float((a["rgb"] - b["rgb"]).detach().abs().max()),
            "visible_pixels": int((a["raster"].face_id >= 0).sum()),
            "silhouette_pairs": int(a["raster"]._silhouettes[0].numel()),
        }
        for threads in (int(t) for t in args.threads.split(",")):
            torch.set_num_threads(threads)
            for side in sides.values():  # warm-up
                side()
            times = {name: {"forward": [], "backward": [], "total": []} for name in sides}
            for _ in range(args.repeats):
                for name, side in sides.items():
                    _, tf, tb = side()
                    times[name]["forward"].append(tf)
                    times[name]["backward"].append(tb)
                    times[name]["total"].append(tf + tb)
            med = {name: {k: median(v) * 1e3 for k, v in t.items()} for name, t in times.items()}
            base = med["dense (all faces x pixels)"]["total"]
            for name, m in med.items():
                rows.append(
                    [
                        batch,
                        threads,
                        name,
                        f"{m['forward']:.1f}",
                        f"{m['backward']:.1f}",
                        f"{m['total']:.1f}",
                        f"{m['total'] / TARGET_MS:.2f}",
                        f"{base / m['total']:.1f}x",
                    ]
                )
            results.append({"batch": batch, "threads": threads, "ms": med, "check": check})
    load_after = os.getloadavg()

    print(
        f"mesh rasterisation forward+backward: {len(faces)} faces, {len(verts)} vertices, "
        f"{args.size}x{args.size} px, median of {args.repeats}; {machine()}; "
        f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after"
    )
    print_table(
        ["batch", "threads", "z-buffer", "forward ms", "backward ms", "total ms", f"/ {TARGET_MS:.0f} ms", "vs dense"],
        rows,
    )
    write_results(
        "rasterize",
        {
            "faces": len(faces),
            "vertices": len(verts),
            "size": args.size,
            "repeats": args.repeats,
            "target_ms": TARGET_MS,
            "load_average_before": load_before,
            "load_average_after": load_after,
            "peak_rss_mb": peak_rss_mb(),
            "results": results,
        },
    )


if __name__ == "__main__":
    main()
