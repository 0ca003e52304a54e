"""Hash encoding throughput: our fused PyTorch encoding vs a straightforward one (and tinycudann).

The straightforward implementation, written here, is what a direct port of the Instant-NGP
formulas looks like: a Python loop over levels, and per level a loop over the 8 cell corners, each
with its own index computation, its own gather from that level's table (``table[index]``) and its
own weighted add. Ours (``dream3d.geometry.hashgrid``) comes in two forms, both timed:

- "PyTorch ops": one ``(8, levels, N)`` index tensor built by broadcasting per-axis corner terms,
  one gather and one weighted sum per feature (``torch.compile`` of it is measured too);
- "C kernel" (the CPU default when a C compiler works): indices, weights, gather and scatter in
  one compiled loop (``dream3d/geometry/hashgrid_kernel.c``), run over level ranges on the torch threads.

Before timing, each is checked to give the same outputs and gradients as the reference (table and
input; the kernel serves points without an input gradient, so its input gradient is the PyTorch ops').

Reported: points per second for one forward + backward (gradient w.r.t. the table, random output
gradient, as in training), median over ``--repeats`` runs, and the speed-up over the reference.

    python benchmarks/hashgrid.py                     # CPU default config + the GPU (Instant-NGP) config
    python benchmarks/hashgrid.py --points 262144 --configs cpu
    python benchmarks/hashgrid.py --device cuda       # adds tinycudann when it imports
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import machine, median, print_table, write_results  # noqa: E402

from dream3d.geometry.hashgrid import PRIMES, HashGridConfig, HashGridEncoding, level_layout, tcnn_available  # noqa: E402
from dream3d.geometry.hashgrid_kernel import kernel_available, kernel_unavailable_reason  # noqa: E402


class LoopHashGrid(nn.Module):
    """Straightforward reference: loop over levels, per-corner index + gather + weighted add."""

    def __init__(self, cfg: HashGridConfig, flat_table: torch.Tensor):
        super().__init__()
        self.layout = level_layout(cfg)
        lay = self.layout
        self.tables = nn.ParameterList(
            [nn.Parameter(flat_table[int(o) : int(o) + int(s)].detach().clone()) for o, s in zip(lay.offset, lay.size)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lay, outs = self.layout, []
        for level, table in enumerate(self.tables):
            pos = x * float(lay.scale[level]) + 0.5
            cell = torch.floor(pos)
            frac = pos - cell
            cell = cell.long()
            res, size = int(lay.resolution[level]), int(lay.size[level])
            out = 0.0
            for corner in range(8):
                bits = [(corner >> d) & 1 for d in range(3)]
                cx, cy, cz = cell[:, 0] + bits[0], cell[:, 1] + bits[1], cell[:, 2] + bits[2]
                if lay.hashed[level]:
                    index = (cx * PRIMES[0] ^ cy * PRIMES[1] ^ cz * PRIMES[2]) % size
                else:
                    index = (cx + cy * res + cz * res * res) % size
                w = torch.ones_like(frac[:, 0])
                for d in range(3):
                    w = w * (frac[:, d] if bits[d] else 1.0 - frac[:, d])
                out = out + w[:, None] * table[index]
            outs.append(out)
        return torch.cat(outs, dim=-1)

    def flat_grad(self) -> torch.Tensor:
        return torch.cat([t.grad for t in self.tables])


def check_same(cfg: HashGridConfig, device: str, kernel: str, n: int = 4096) -> dict:
    """Outputs and gradients (table and input) of ours vs the reference, on random points."""
    torch.manual_seed(0)
    ours = HashGridEncoding(cfg, device=device, kernel=kernel)
    with torch.no_grad():  # larger values than the 1e-4 init so differences would show
        ours.params.uniform_(-1.0, 1.0)
    ref = LoopHashGrid(cfg, ours.params.t()).to(device)
    x = torch.rand(n, 3, device=device)
    xb = x.clone().requires_grad_(True)
    a, b = ours(x), ref(xb)  # x needs no gradient here: the kernel's path when it is on
    g = torch.randn_like(a)
    a.backward(g)
    b.backward(g)
    xa = x.clone().requires_grad_(True)  # the input gradient (always the PyTorch ops)
    (ga,) = torch.autograd.grad(ours(xa), xa, g)
    res = {
        "max_abs_output_diff": float((a - b).detach().abs().max()),
        "max_abs_table_grad_diff": float((ours.params.grad.t() - ref.flat_grad()).abs().max()),
        "max_rel_input_grad_diff": float((ga - xb.grad).abs().max() / xb.grad.abs().max()),
    }
    ok = (
        res["max_abs_output_diff"] < 1e-5
        and res["max_abs_table_grad_diff"] < 1e-4
        and res["max_rel_input_grad_diff"] < 1e-4
    )
    if not ok:
        raise SystemExit(f"ours ({kernel=}) and the reference disagree for {cfg}: {res}")
    return res


def time_sides(sides: dict, n: int, device: str, repeats: int) -> dict:
    """Median seconds of forward + backward on ``n`` random points (table gradient only) for each
    side. Sides alternate within each repeat, so machine noise hits all of them alike."""
    g = torch.Generator(device="cpu").manual_seed(1)
    x = torch.rand(n, 3, generator=g).to(device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def step(module, params):
        for p in params:
            p.grad = None
        out = module(x)
        out.backward(torch.ones_like(out))

    for module, params in sides.values():  # warm-up (and compile)
        step(module, params)
        step(module, params)
    times = {name: [] for name in sides}
    for _ in range(repeats):
        for name, (module, params) in sides.items():
            sync()
            t0 = time.perf_counter()
            step(module, params)
            sync()
            times[name].append(time.perf_counter() - t0)
    return {name: median(t) for name, t in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--points", type=int, default=65536)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--configs", default="cpu,ngp", help="comma list of: cpu, ngp, or L:log2:maxres")
    p.add_argument("--compile", action="store_true", help="also time torch.compile of both (slow to compile)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    configs = {}
    for name in args.configs.split(","):
        if name == "cpu":
            configs["cpu default"] = HashGridConfig.cpu_default()
        elif name == "ngp":
            configs["instant-ngp"] = HashGridConfig()
        else:
            L, log2, maxres = (int(v) for v in name.split(":"))
            configs[name] = HashGridConfig.from_max_resolution(maxres, levels=L, log2_table_size=log2)

    kernel = args.device == "cpu" and kernel_available()
    if args.device == "cpu" and not kernel:
        print(f"no C kernel row: {kernel_unavailable_reason()}")
    rows, results = [], {}
    for name, cfg in configs.items():
        check = {"ours, PyTorch ops": check_same(cfg, args.device, "off")}
        torch.manual_seed(0)
        ours = HashGridEncoding(cfg, device=args.device, kernel="off")
        ref = LoopHashGrid(cfg, ours.params.t()).to(args.device)
        sides = {"reference (loop)": (ref, list(ref.parameters())), "ours, PyTorch ops": (ours, [ours.params])}
        if kernel:
            check["ours, C kernel"] = check_same(cfg, args.device, "on")
            fused = HashGridEncoding(cfg, device=args.device, kernel="on")
            sides["ours, C kernel"] = (fused, [fused.params])
        if args.compile:
            comp = HashGridEncoding(cfg, device=args.device, kernel="off")
            sides["ours + torch.compile"] = (torch.compile(comp, dynamic=True), [comp.params])
            cref = LoopHashGrid(cfg, ours.params.t()).to(args.device)
            sides["reference + torch.compile"] = (torch.compile(cref, dynamic=True), list(cref.parameters()))
        if args.device == "cuda" and tcnn_available():
            from dream3d.geometry.hashgrid import TcnnEncoding

            tc = TcnnEncoding(cfg, args.device)
            sides["tinycudann"] = (tc, list(tc.parameters()))
        failed = {}
        for side in [s for s in sides if "compile" in s]:  # compile problems are reported, not fatal
            try:
                time_sides({side: sides[side]}, 1024, args.device, 1)
            except Exception as e:  # noqa: BLE001
                failed[side] = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
                del sides[side]
        t = time_sides(sides, args.points, args.device, args.repeats)
        t_ref = t["reference (loop)"]
        for side, sec in t.items():
            rows.append([name, side, f"{args.points / sec / 1e6:.3f}", f"{sec * 1e3:.1f}", f"{t_ref / sec:.2f}x"])
        for side, why in failed.items():
            rows.append([name, side, "-", "-", f"failed ({why[:60]})"])
        results[name] = {
            "config": cfg.to_dict(),
            "table_rows": level_layout(cfg).rows,
            "check": check,
            "seconds": t,
            "points_per_second": {s: args.points / v for s, v in t.items()},
            "speedup_vs_reference": {s: t_ref / v for s, v in t.items()},
            "failed": failed,
        }

    print(
        f"hash encoding forward+backward, {args.points} points, {args.device}, "
        f"{torch.get_num_threads()} thread(s); {machine()}; the encoding's default here: "
        f"{'C kernel' if kernel else 'tinycudann' if args.device == 'cuda' and tcnn_available() else 'PyTorch ops'}"
    )
    print_table(["config", "implementation", "M points/s", "ms / step", "vs reference"], rows)
    write_results(
        "hashgrid",
        {
            "device": args.device,
            "points": args.points,
            "threads": torch.get_num_threads(),
            "c_kernel": kernel,
            "results": results,
        },
    )


if __name__ == "__main__":
    main()
