"""Benchmark: forward+backward of the torch mesh rasteriser (render_mesh) on a ~10k-face mesh.

    OMP_NUM_THREADS=1 python bench/mesh.py                   # 10k faces, 128 px, 1 camera
    OMP_NUM_THREADS=1 python bench/mesh.py --faces 40000 --size 256 --batch 4

The mesh is a UV sphere of radius 0.8 with random vertex colours, seen from radius 2.5 at
fov 45 deg. Reported (median wall time over --repeats after one warm-up, same process):

- visibility: the no-grad tile/z-buffer pass alone (`_visible_faces`), the reference the
  other rows are divided by;
- rasterize: visibility + differentiable barycentrics of the winners;
- forward: the full `render_mesh` (interpolation, colours, anti-aliasing);
- forward+backward: `render_mesh` + a loss on rgb and alpha + `backward()` to the vertices
  and colours, which is what one optimisation step of a MeshScene costs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def sphere(target_faces: int):
    """A UV sphere with about `target_faces` faces (4 * rings * segments / 2) and random colours."""
    import torch
    import trimesh

    from renderers.mesh import TriangleMesh

    rings = max(3, round((target_faces / 8) ** 0.5))
    mesh = TriangleMesh.from_trimesh(trimesh.creation.uv_sphere(radius=0.8, count=[rings, 2 * rings]))
    mesh.vertex_colors = torch.rand(mesh.num_vertices, 3, generator=torch.Generator().manual_seed(0))
    return mesh


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--faces", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    import torch

    from core.cameras import orbit_cameras
    from renderers.mesh import MeshRenderConfig, face_neighbours, rasterize, render_mesh
    from renderers.mesh.raster import _visible_faces, camera_space

    device = torch.device(args.device)
    mesh = sphere(args.faces).to(device)
    cameras = orbit_cameras(args.batch, elevation_deg=20.0, radius=2.5, width=args.size, height=args.size).to(device)
    cfg = MeshRenderConfig(backend="torch")
    neighbours = face_neighbours(mesh.faces)
    vertices = mesh.vertices.clone().requires_grad_(True)
    colors = mesh.vertex_colors.clone().requires_grad_(True)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def visibility():
        with torch.no_grad():
            _visible_faces(camera_space(mesh.vertices, cameras), mesh.faces, cameras, cfg.near, cfg.far, False, None, 1 << 21)
        sync()

    def raster():
        rasterize(vertices, mesh.faces, cameras, backend="torch")
        sync()

    def forward():
        render_mesh(mesh.with_vertices(vertices), cameras, cfg=cfg, neighbours=neighbours)
        sync()

    def forward_backward():
        m = mesh.with_vertices(vertices)
        m.vertex_colors = colors
        out = render_mesh(m, cameras, cfg=cfg, neighbours=neighbours)
        (out.rgb.square().mean() + out.alpha.mean()).backward()
        sync()

    print("command:", " ".join(["python", *sys.argv]))
    print(f"mesh: {mesh.num_faces} faces, {mesh.num_vertices} vertices; {args.batch} camera(s) at {args.size} px; "
          f"device {device}; torch threads {torch.get_num_threads()}")
    reference = median_time(visibility, args.repeats)
    for name, fn in (("visibility", visibility), ("rasterize", raster), ("forward", forward),
                     ("forward+backward", forward_backward)):
        seconds = reference if fn is visibility else median_time(fn, args.repeats)
        print(f"{name:>17}: {seconds * 1e3:8.1f} ms   x{seconds / reference:5.2f} visibility")


if __name__ == "__main__":
    main()
