"""Analytic anti-aliasing of silhouette edges, which is what gives geometry its edge gradients.

Following nvdiffrast's antialias op (Laine et al. 2020, "Modular Primitives for
High-Performance Differentiable Rendering", Sec. 3.4): for every pair of horizontally or
vertically adjacent pixels that see different surfaces, find where the silhouette edge of
the front triangle crosses the segment between the two pixel centres, at fraction t from
the front pixel. Treating each pixel as a unit-wide segment, the front surface covers
t - 0.5 of the back pixel (t > 0.5) or leaves 0.5 - t of the front pixel uncovered
(t < 0.5); that pixel's colour is blended by that fraction. t is an analytic function of
the edge's vertices, so d(colour)/d(vertices) is non-zero exactly at silhouettes.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .raster import Rasterization, _edge_normals


def face_neighbours(faces: Tensor) -> Tensor:
    """[F,3] long: the face across the edge opposite each corner, -1 on boundary or non-manifold edges.

    faces [F,3] long. Edge i of a face joins corners i+1 and i+2 (the edge where barycentric i is 0).
    """
    F = faces.shape[0]
    edges = torch.stack([faces.roll(-1, dims=1), faces.roll(-2, dims=1)], dim=-1).view(-1, 2)  # [3F,2]
    lo, hi = edges.min(-1).values, edges.max(-1).values
    key = lo * (int(faces.max()) + 1 if F else 1) + hi
    sorted_key, order = key.sort()
    _, inverse, counts = torch.unique_consecutive(sorted_key, return_inverse=True, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    neighbours = torch.full((3 * F,), -1, dtype=torch.long, device=faces.device)
    pair = (counts == 2).nonzero().squeeze(-1)  # manifold edges: exactly two faces
    first, second = order[starts[pair]], order[starts[pair] + 1]
    neighbours[first] = second // 3
    neighbours[second] = first // 3
    return neighbours.view(F, 3)


def antialias(color: Tensor, rast: Rasterization, neighbours: Tensor | None = None, max_walk: int = 8) -> Tensor:
    """Blend colours across silhouette edges; differentiable in `color` and the vertex positions.

    color [B,H,W,C] (already composited over the background), rast from `rasterize` of the
    same mesh, neighbours [F,3] from `face_neighbours` (computed when None; pass it in to
    reuse it across renders of the same topology). Returns [B,H,W,C].
    """
    B, H, W = rast.shape
    if len(rast.faces) == 0:
        return color
    if neighbours is None:
        neighbours = face_neighbours(rast.faces)
    with torch.no_grad():
        corners = rast.verts_cam.detach()[:, rast.faces]  # [B,F,3,3]
        edge_normals = _edge_normals(corners)
        facing = (corners[..., 0, :] * edge_normals[..., 0, :]).sum(-1).sign()  # [B,F]
    flat_color = color.reshape(B * H * W, -1)
    flat_face = rast.face_id.reshape(-1)
    depth = rast.depth.detach().reshape(-1).masked_fill(flat_face < 0, float("inf"))
    index = torch.arange(B * H * W, device=color.device).view(B, H, W)
    deltas, targets = [], []
    for p, q in ((index[:, :, :-1], index[:, :, 1:]), (index[:, :-1, :], index[:, 1:, :])):
        p, q = p.reshape(-1), q.reshape(-1)
        fp, fq = flat_face[p], flat_face[q]
        differ = fp != fq
        # two faces sharing an edge and turned the same way are one smooth piece of surface
        both = (fp >= 0) & (fq >= 0)
        batch = p // (H * W)
        adjacent = (neighbours[fp.clamp_min(0)] == fq[:, None]).any(-1)
        same_way = facing[batch, fp.clamp_min(0)] == facing[batch, fq.clamp_min(0)]
        candidate = differ & ~(both & adjacent & same_way)
        p, q = p[candidate], q[candidate]
        p_front = depth[p] < depth[q]
        front, back = torch.where(p_front, p, q), torch.where(p_front, q, p)
        delta, target = _edge_blend(flat_color, flat_face, front, back, rast, neighbours, edge_normals, facing, max_walk)
        deltas.append(delta)
        targets.append(target)
    out = flat_color.index_add(0, torch.cat(targets), torch.cat(deltas))
    return out.view_as(color)


def _edge_blend(
    color: Tensor, face_id: Tensor, front: Tensor, back: Tensor, rast: Rasterization, neighbours: Tensor,
    edge_normals: Tensor, facing: Tensor, max_walk: int,
) -> tuple[Tensor, Tensor]:
    """Colour changes [M,C] and the flat pixel indices [M] they apply to, for pixel pairs (front, back) [P].

    edge_normals [B,F,3,3] from `_edge_normals` and facing [B,F] (orientation sign) per camera, no grad.
    """
    batch = front // (rast.shape[1] * rast.shape[2])
    rays = rast.rays.reshape(-1, 3)
    faces = rast.faces
    with torch.no_grad():
        # The face seen at the front pixel is often not the one owning the silhouette: thin,
        # grazing faces lie between the two pixel centres. Walk from face to face along the
        # segment (through edges shared with faces turned the same way) until an edge is a
        # silhouette: no face across it, or the face across turns the other way.
        face = face_id[front]
        found = torch.zeros_like(face, dtype=torch.bool)
        edge = torch.zeros_like(face)
        active = torch.ones_like(found)
        for _ in range(max_walk):
            normals = edge_normals[batch, face]
            sign = facing[batch, face][:, None]
            w_front = (normals * rays[front, None]).sum(-1) * sign  # >= 0 inside the face
            w_back = (normals * rays[back, None]).sum(-1) * sign
            # along the segment the face ends at the first edge whose w decreases through 0
            decreasing = w_front > w_back
            t = torch.where(decreasing, w_front / (w_front - w_back).clamp_min(1e-30), torch.inf)
            t_exit, exit_edge = t.min(-1)
            active &= t_exit < 1  # else the back pixel lies inside this face: no silhouette here
            other = neighbours[face, exit_edge]
            silhouette = active & ((other < 0) | (facing[batch, other.clamp_min(0)] != sign[:, 0]))
            found |= silhouette
            edge = torch.where(silhouette, exit_edge, edge)
            active &= ~silhouette
            face = torch.where(active, other, face)
            if not active.any():
                break
    front, back, face, edge, batch = front[found], back[found], face[found], edge[found], batch[found]
    # the crossing point again, now differentiable in the silhouette edge's two vertices
    corners = rast.verts_cam[batch[:, None], faces[face]]
    a = corners.gather(1, ((edge + 1) % 3)[:, None, None].expand(-1, 1, 3)).squeeze(1)
    b = corners.gather(1, ((edge + 2) % 3)[:, None, None].expand(-1, 1, 3)).squeeze(1)
    normal = torch.cross(a, b, dim=-1)
    w_front = (normal * rays[front]).sum(-1)
    w_back = (normal * rays[back]).sum(-1)
    t = w_front / (w_front - w_back)
    c_front, c_back = color[front], color[back]
    covers_back = t > 0.5
    weight = torch.where(covers_back, t - 0.5, 0.5 - t)[:, None]
    delta = weight * torch.where(covers_back[:, None], c_front - c_back, c_back - c_front)
    return delta, torch.where(covers_back, back, front)
