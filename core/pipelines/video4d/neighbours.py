"""k nearest neighbours and the local motion regularisers of DreamScene4D.

DreamScene4D (Chu et al. 2024, sec. 3.3) keeps the object-centric deformation locally rigid
with two terms over each Gaussian's k nearest canonical neighbours (gs_renderer_4d.py:
`precompute_nn(k=16)`, `render_flow`), the first taken from Dynamic 3D Gaussians (Luiten et
al. 2024, eq. 3).

Local rigidity. If Gaussian i moves rigidly from a reference state (mu_i, R_i) to (mu'_i, R'_i),
its neighbour j moves with it: mu'_j - mu'_i = R'_i R_i^{-1} (mu_j - mu_i). With the relative
rotation Q_i = R'_i R_i^{-1} the residual, taken back into the reference frame, is

    r_ij = (mu_j - mu_i) - Q_i^T (mu'_j - mu'_i)                                  (Luiten eq. 3)
    L_rigid = 1/(N k) sum_i sum_{j in knn(i)} w_ij ||r_ij||_2

zero for any rigid motion of the neighbourhood. The reference state is the canonical object
(Q_i = the deformation field's d_q, then `rotations` = d_q) or the previous frame (Q_i =
q'_i q_i^{-1}, see `relative_rotation`; with the field q' = d_q q, so Q_i =
relative_rotation(d_q(tau_t), d_q(tau_{t-1})), the canonical q cancelling). DreamScene4D does
the latter: neighbours found once on the canonical Gaussians, the loss between frames t-1, t. DreamScene4D's code builds Q_i^T from q_{t-1} q_t^{-1},
i.e. it applies R_t R_{t-1}^T to the current offsets, which is not zero for a rigid motion
that rotates; we use Luiten's order, which is.

Local scale. With Delta s_i = log s'_i - log s_i [3] (the deformation field's d_log_scales),
neighbours should change scale alike:

    L_scale = 1/(N k) sum_i sum_{j in knn(i)} w_ij ||Delta s_j - Delta s_i||_2

Weights. DreamScene4D takes Euclidean neighbour distances d_ij in canonical space and computes
sqrt(exp(-10 d_ij) ||r_ij||^2 + 1e-20), the weight inside the root; that is w_ij ||r_ij|| with
w_ij = exp(-5 d_ij), which `neighbour_weights` returns by default. (Luiten uses
exp(-2000 d_ij^2) for metric scenes with dense points; k = 20 there, 16 in DreamScene4D.) The
norms are sqrt(. + 1e-20) so the gradient at a zero residual is finite.

Isometry. Luiten et al. also use an isometry term (neighbour distances kept) and a rotation
similarity term; DreamScene4D uses neither, so they are not here.
"""

from __future__ import annotations

import torch
from torch import Tensor

from core.pipelines.video4d.deformation import quaternion_multiply

EPS = 1e-20


@torch.no_grad()
def knn(points: Tensor, k: int, chunk: int = 1024) -> tuple[Tensor, Tensor]:
    """Brute-force k nearest neighbours of every point among the others.

    points [N,3] -> idx [N,k] int64 (self excluded, nearest first), dist [N,k] Euclidean
    distances (no gradient). Memory is chunk x N floats at a time. Needs N > k.
    """
    n = points.shape[0]
    if not 0 < k < n:
        raise ValueError(f"knn needs 0 < k < N, got k={k}, N={n}")
    idx, dist = [], []
    for start in range(0, n, chunk):
        rows = points[start : start + chunk]
        d = torch.cdist(rows, points, compute_mode="donot_use_mm_for_euclid_dist")
        r = torch.arange(rows.shape[0], device=points.device)
        d[r, r + start] = float("inf")  # self
        values, indices = d.topk(k, dim=1, largest=False, sorted=True)
        idx.append(indices)
        dist.append(values)
    return torch.cat(idx), torch.cat(dist)


def neighbour_weights(dist: Tensor, falloff: float = 5.0) -> Tensor:
    """w_ij = exp(-falloff d_ij) for distances [N,k]; 5.0 reproduces DreamScene4D (module doc)."""
    return torch.exp(-falloff * dist)


def quaternion_to_matrix(q: Tensor) -> Tensor:
    """Unit wxyz quaternions [...,4] -> rotation matrices [...,3,3] (normalised first)."""
    w, x, y, z = torch.nn.functional.normalize(q, dim=-1).unbind(-1)
    return torch.stack(
        (
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ),
        -1,
    ).reshape(*q.shape[:-1], 3, 3)


def relative_rotation(quats_to: Tensor, quats_from: Tensor) -> Tensor:
    """Q = q_to * q_from^{-1} [N,4] wxyz: the rotation taking each Gaussian's orientation
    `quats_from` [N,4] to `quats_to` [N,4] (both normalised here)."""
    q_from = torch.nn.functional.normalize(quats_from, dim=-1)
    conjugate = q_from * q_from.new_tensor([1.0, -1.0, -1.0, -1.0])
    return quaternion_multiply(torch.nn.functional.normalize(quats_to, dim=-1), conjugate)


def _weighted_mean_norm(residual: Tensor, weights: Tensor) -> Tensor:
    return (weights * torch.sqrt(residual.square().sum(-1) + EPS)).mean()


def rigidity_loss(canonical: Tensor, deformed: Tensor, rotations: Tensor, idx: Tensor, weights: Tensor) -> Tensor:
    """Local rigidity (Luiten et al. 2024 eq. 3; module doc).

    canonical [N,3]: reference means; deformed [N,3]: the same Gaussians moved;
    rotations: Q_i, reference -> deformed, as wxyz quaternions [N,4] or matrices [N,3,3];
    idx [N,k] neighbours (from `knn` on the reference), weights [N,k] >= 0. Returns a scalar.
    """
    Q = quaternion_to_matrix(rotations) if rotations.shape[-1] == 4 else rotations
    offsets_ref = canonical[idx] - canonical[:, None]  # [N,k,3]
    offsets_now = deformed[idx] - deformed[:, None]
    back = torch.einsum("nba,nkb->nka", Q, offsets_now)  # Q_i^T (mu'_j - mu'_i)
    return _weighted_mean_norm(offsets_ref - back, weights)


def local_scale_loss(log_scale_change: Tensor, idx: Tensor, weights: Tensor) -> Tensor:
    """DreamScene4D's local scale term (module doc): log_scale_change [N,3] = log s' - log s,
    idx [N,k], weights [N,k] -> scalar."""
    return _weighted_mean_norm(log_scale_change[idx] - log_scale_change[:, None], weights)
