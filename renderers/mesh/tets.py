"""Tetrahedral grids and marching tetrahedra (the surface extraction of DMTet, Shen et al. 2021).

The grid is generated here: a cube grid with every cell cut into 6 tetrahedra along its main
diagonal (Kuhn/Freudenthal subdivision). Neighbouring cells cut their shared faces the same
way, so the tetrahedra conform and extracted surfaces are watertight.

The triangle table is derived in code from a reference tetrahedron rather than typed in:
for each of the 16 inside/outside patterns, the edges with a sign change carry one
triangle (one vertex apart from the other three) or a quad split in two (two and two),
oriented so the normal points from the inside (sdf <= 0) to the outside (sdf > 0).
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor

# the 6 edges of a tetrahedron as pairs of its local vertex indices
TET_EDGES = torch.tensor([[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]])


def _triangle_table() -> tuple[Tensor, Tensor]:
    """[16,2,3] local edge indices of up to two triangles per case (-1: none) and [16] their count.

    Case bit i is set when local vertex i is outside (sdf > 0).
    """
    ref = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])  # positively oriented
    edge_of = {tuple(e): i for i, e in enumerate(TET_EDGES.tolist())}

    def edge(a, b):
        return edge_of[(min(a, b), max(a, b))]

    table = torch.full((16, 2, 3), -1, dtype=torch.long)
    count = torch.zeros(16, dtype=torch.long)
    for case in range(16):
        outside = [i for i in range(4) if case >> i & 1]
        inside = [i for i in range(4) if not case >> i & 1]
        if len(outside) in (0, 4):
            continue
        if len(outside) == 2:
            (a, b), (c, d) = inside, outside
            ring = [edge(a, c), edge(b, c), edge(b, d), edge(a, d)]  # the quad, in cyclic order
            triangles = [ring[:3], [ring[0], ring[2], ring[3]]]
        else:
            lone = outside[0] if len(outside) == 1 else inside[0]
            triangles = [[edge(lone, j) for j in range(4) if j != lone]]
        direction = ref[outside].mean(0) - ref[inside].mean(0)
        for k, tri in enumerate(triangles):
            p = ref[TET_EDGES[tri]].mean(1)  # edge midpoints [3,3]
            if torch.dot(torch.cross(p[1] - p[0], p[2] - p[0], dim=0), direction) < 0:
                tri = [tri[0], tri[2], tri[1]]
            table[case, k] = torch.tensor(tri)
        count[case] = len(triangles)
    return table, count


TRIANGLE_TABLE, NUM_TRIANGLES = _triangle_table()


def tet_grid(resolution: int, scale: float = 1.0, device=None) -> tuple[Tensor, Tensor]:
    """A cube grid over [-scale, scale]^3 with `resolution` cells per axis, 6 tetrahedra per cell.

    Returns vertices [(R+1)^3,3] float32 and tets [6 R^3,4] long, every tet positively oriented.
    """
    if resolution < 1:
        raise ValueError(f"tet grid resolution must be >= 1, got {resolution}")
    R, n = resolution, resolution + 1
    axis = torch.linspace(-scale, scale, n, device=device)
    vertices = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)
    # Kuhn subdivision: one tet per axis order, walking (0,0,0) -> (1,1,1) one axis at a time
    local = []
    for order in itertools.permutations(range(3)):
        corner = [0, 0, 0]
        path = [tuple(corner)]
        for axis_index in order:
            corner[axis_index] = 1
            path.append(tuple(corner))
        corners = torch.tensor(path, dtype=torch.float32)
        if torch.linalg.det(corners[1:] - corners[0]) < 0:
            path[2], path[3] = path[3], path[2]
        local.append([(i * n + j) * n + k for i, j, k in path])
    local = torch.tensor(local, device=device)  # [6,4] offsets from a cell's origin vertex
    i, j, k = torch.meshgrid(*(torch.arange(R, device=device),) * 3, indexing="ij")
    origin = ((i * n + j) * n + k).reshape(-1, 1, 1)
    tets = (origin + local).reshape(-1, 4)
    return vertices, tets


def tet_edges(tets: Tensor) -> Tensor:
    """[E,2] unique edges (low, high vertex index) of tets [T,4]."""
    edges = tets[:, TET_EDGES].reshape(-1, 2).sort(-1).values
    return torch.unique(edges, dim=0)


def marching_tets(
    vertices: Tensor, tets: Tensor, sdf: Tensor, features: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Zero level set of `sdf` on a tetrahedral mesh as a triangle mesh.

    vertices [N,3], tets [T,4] (positively oriented), sdf [N] (< 0 inside), features [N,C] or None.
    Returns surface vertices [S,3], faces [F,3] long (outward normals) and features [S,C] or None.
    Each surface vertex sits where the linear interpolation of the sdf crosses zero on a grid
    edge, so it is differentiable in `vertices`, `sdf` and `features`; tets sharing an edge
    share its vertex, which keeps the surface closed.
    """
    with torch.no_grad():
        outside = sdf > 0
        tet_outside = outside[tets]
        n_outside = tet_outside.sum(-1)
        surface_tets = tets[(n_outside > 0) & (n_outside < 4)]
        edges = surface_tets[:, TET_EDGES.to(tets.device)].sort(-1).values  # [T',6,2]
        crossing = outside[edges[..., 0]] != outside[edges[..., 1]]
        key = edges[..., 0] * vertices.shape[0] + edges[..., 1]
        unique_keys, vertex_of_edge = torch.unique(key[crossing], return_inverse=True)
        edge_vertex = torch.full_like(key, -1)
        edge_vertex[crossing] = vertex_of_edge
        case = (outside[surface_tets].long() << torch.arange(4, device=tets.device)).sum(-1)
        table = TRIANGLE_TABLE.to(tets.device)[case]  # [T',2,3]
        count = NUM_TRIANGLES.to(tets.device)[case]
        first = edge_vertex.gather(1, table[:, 0])
        second = edge_vertex[count == 2].gather(1, table[count == 2, 1])
        faces = torch.cat([first, second])
        a, b = unique_keys // vertices.shape[0], unique_keys % vertices.shape[0]
    sa, sb = sdf[a, None], sdf[b, None]
    # the zero of the sdf's linear interpolation along edge (a, b)
    weight_a = sb / (sb - sa)
    surface = weight_a * vertices[a] + (1 - weight_a) * vertices[b]
    surface_features = None if features is None else weight_a * features[a] + (1 - weight_a) * features[b]
    return surface, faces, surface_features
