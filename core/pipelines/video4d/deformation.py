"""Object-centric deformation field: HexPlane / K-planes grid + small MLP (4DGaussians).

DreamScene4D (Chu et al. 2024, sec. 3.3) moves each object's canonical Gaussians with the
deformation network of 4DGaussians (Wu et al. 2024, sec. 4.2), whose grid is K-planes
(Fridovich-Keil et al. 2023). For a canonical mean mu = (x, y, z) and time tau in [0, 1]:

    p = (x / b, y / b, z / b, 2 tau - 1)  in [-1, 1]^4         b = cfg.bounds (border padding outside)
    f_l(p) = prod_{(a,c) in P} bilerp(Plane_{l,ac}, p_a, p_c)   Hadamard product over the six planes
             P = {xy, xz, yz, xt, yt, zt}, Plane_{l,ac} in R^{F x r_c x r_a}, spatial r = res * m_l,
             time r = time_resolution (4DGaussians: multi-resolution on the space axes only)
    f(p) = concat_l f_l(p)                                     concatenated over resolutions m_l
    h = W_in f(p)                                              trunk (4DGaussians' feature_out, D = 1)
    d_mu = head_x(h),  d_q = normalise(e + head_q(h)),  d_s = head_s(h)    heads: ReLU-Linear-ReLU-Linear

and the deformed Gaussian is mu' = mu + d_mu, q' = d_q * q (Hamilton product, wxyz; d_q is unit so
|q'| = |q|), log s' = log s + d_s. Colour and opacity are not deformed (DreamScene4D's `no_do`).

Identity at init. Space planes ~ U(0.1, 0.5) and time planes = 1 (K-planes' init, so a time plane
multiplies by one until it learns), and the last Linear of every head is zero: d_mu = 0,
d_q = e = (1, 0, 0, 0), d_s = 0 exactly, whatever the grid holds. 4DGaussians' residual heads
(`use_res`, DreamScene4D's setting) zero the whole head; we zero the last layer only, which is
enough for exactness. Rotations: 4DGaussians adds d_q to the unnormalised quaternion; we compose
a unit d_q by multiplication (the contract), which keeps the quaternion's norm and makes
"the rotation of Gaussian i from canonical to tau" exactly d_q (what rigidity_loss needs).
Note the zero last layer blocks the gradient to the grid and trunk at step 0 (d loss / d h =
W_last^T ... = 0); it reaches them from the first optimiser step on.

Grid regularisers (K-planes sec. 3.2, weights of 4DGaussians' defaults):

    TV(P)  = 2 (mean_{i,j} (P_{i+1,j} - P_{i,j})^2 + mean_{i,j} (P_{i,j+1} - P_{i,j})^2)   space planes
    TS(P)  = mean_{t,j} (P_{t+1,j} - 2 P_{t,j} + P_{t-1,j})^2                               time planes, along t
    L1(P)  = mean |1 - P|                                                                    time planes
    R = w_tv sum TV + w_ts sum TS + w_l1 sum L1      (sums over planes and resolutions)

(4DGaussians' `_plane_regulation` applies the time-smoothness second difference to its space
planes instead of TV; we follow K-planes. DreamScene4D's main_4d.py adds none of these.)

Defaults, from github:dreamscene4d/dreamscene4d (arguments/__init__.py ModelHiddenParams,
configs/4d.yaml) unless marked CPU:
    bounds 1.6 there (object radius ~0.5 from Zero123 lifting); ours 1.0 (contract, object
        inside radius ~0.6).
    spatial resolution 64, time resolution 25 (or 0.8 T if larger), multires (1, 2, 4, 8),
        features 32, net_width 64: CPU choices resolution 32, time_resolution 16,
        multires (1, 2), features 16; hidden 64 taken.
    lr_grid 0.0064, lr_mlp 0.00064 (4d.yaml grid_lr_init / deformation_lr_init, constant):
        taken. DreamScene4D uses AdamW(eps=1e-15).
    regulariser weights plane_tv 1e-4, time_smoothness 0.01, l1_time_planes 1e-4: taken from
        4DGaussians (arguments/dnerf/dnerf_default.py, the same in DreamScene4D's arguments).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

AXES = "xyzt"
# K-planes' plane order (itertools.combinations of the 4 axes): xy, xz, xt, yz, yt, zt
PLANES = tuple(AXES[a] + AXES[c] for a, c in itertools.combinations(range(4), 2))
SPACE_PLANES = ("xy", "xz", "yz")
TIME_PLANES = ("xt", "yt", "zt")


@dataclass
class DeformationConfig:
    """HexPlane / K-planes deformation field; defaults and their sources in the module doc.

    bounds: canonical coordinates live in [-bounds, bounds]^3 (outside: border values).
    resolution: spatial plane resolution at multires 1; time_resolution: along tau.
    multires: spatial resolution multipliers, one feature level each (concatenated).
    features: channels per plane; hidden: MLP width.
    lr_grid, lr_mlp: Adam learning rates of the planes and of the MLP.
    weight_tv, weight_time_smoothness, weight_time_l1: grid regulariser weights.
    """

    bounds: float = 1.0
    resolution: int = 32
    time_resolution: int = 16
    multires: tuple[int, ...] = (1, 2)
    features: int = 16
    hidden: int = 64
    lr_grid: float = 0.0064
    lr_mlp: float = 0.00064
    weight_tv: float = 1e-4
    weight_time_smoothness: float = 0.01
    weight_time_l1: float = 1e-4


def quaternion_multiply(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product a * b of wxyz quaternions [..., 4] (rotation b first, then a)."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        (
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ),
        -1,
    )


def plane_total_variation(plane: Tensor) -> Tensor:
    """K-planes' TV of a plane [1,C,H,W]: 2 (mean squared vertical + horizontal difference)."""
    dh = (plane[..., 1:, :] - plane[..., :-1, :]).square().mean()
    dw = (plane[..., :, 1:] - plane[..., :, :-1]).square().mean()
    return 2 * (dh + dw)


def time_smoothness(plane: Tensor) -> Tensor:
    """K-planes' smoothness of a time plane [1,C,T,W]: mean squared second difference along T."""
    d2 = plane[..., 2:, :] - 2 * plane[..., 1:-1, :] + plane[..., :-2, :]
    return d2.square().mean()


class DeformationField(nn.Module):
    """Canonical Gaussians -> Gaussians at normalised time tau (see the module doc)."""

    def __init__(self, cfg: DeformationConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or DeformationConfig()
        self.grids = nn.ModuleList()
        for m in cfg.multires:
            level = nn.ParameterDict()
            for name in PLANES:
                # [1, C, rows = second axis, cols = first axis] as grid_sample reads (u, v)
                size = [cfg.time_resolution if ax == "t" else cfg.resolution * m for ax in name[::-1]]
                if "t" in name:
                    level[name] = nn.Parameter(torch.ones(1, cfg.features, *size))
                else:
                    level[name] = nn.Parameter(torch.empty(1, cfg.features, *size).uniform_(0.1, 0.5))
            self.grids.append(level)
        self.trunk = nn.Linear(cfg.features * len(cfg.multires), cfg.hidden)
        self.head_means = self._head(3)
        self.head_quats = self._head(4)
        self.head_scales = self._head(3)

    def _head(self, out: int) -> nn.Sequential:
        h = self.cfg.hidden
        head = nn.Sequential(nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, out))
        nn.init.zeros_(head[-1].weight)
        nn.init.zeros_(head[-1].bias)
        return head

    def features(self, means: Tensor, tau: float | Tensor) -> Tensor:
        """Grid features [N, features * len(multires)] of means [N,3] at tau (scalar or [N])."""
        n = means.shape[0]
        tau = torch.as_tensor(tau, dtype=means.dtype, device=means.device).reshape(-1)
        coords = torch.cat([means / self.cfg.bounds, (2 * tau - 1).expand(n)[:, None]], dim=-1)
        levels = []
        for level in self.grids:
            product = 1.0
            for name in PLANES:
                uv = coords[:, [AXES.index(name[0]), AXES.index(name[1])]].view(1, 1, n, 2)
                sampled = F.grid_sample(level[name], uv, mode="bilinear", padding_mode="border", align_corners=True)
                product = product * sampled.view(-1, n).t()  # Hadamard product over planes
            levels.append(product)
        return torch.cat(levels, dim=-1)

    def forward(self, means: Tensor, tau: float | Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """means [N,3] canonical, tau scalar (or [N]) in [0,1] -> d_means [N,3], d_quats [N,4]
        (unit wxyz, composed as q' = d_q * q), d_log_scales [N,3]."""
        h = self.trunk(self.features(means, tau))
        d_means = self.head_means(h)
        identity = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=h.dtype, device=h.device)
        d_quats = F.normalize(identity + self.head_quats(h), dim=-1)
        return d_means, d_quats, self.head_scales(h)

    def deform(self, means: Tensor, quats: Tensor, log_scales: Tensor, tau: float | Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Canonical means [N,3], quats [N,4] wxyz (unnormalised), log_scales [N,3] -> the same at
        tau; exactly the identity right after __init__."""
        d_means, d_quats, d_log_scales = self(means, tau)
        return means + d_means, quaternion_multiply(d_quats, quats), log_scales + d_log_scales

    def param_groups(self) -> list[dict]:
        """Two named Adam groups: "deformation_grid" (lr_grid) and "deformation_mlp" (lr_mlp)."""
        mlp = [p for name, p in self.named_parameters() if not name.startswith("grids.")]
        return [
            {"name": "deformation_grid", "params": list(self.grids.parameters()), "lr": self.cfg.lr_grid},
            {"name": "deformation_mlp", "params": mlp, "lr": self.cfg.lr_mlp},
        ]

    def regulariser(self) -> Tensor:
        """Weighted K-planes grid regulariser (module doc): TV on space planes, second-difference
        smoothness and L1-to-one on time planes, summed over planes and resolutions."""
        terms = self.regulariser_terms()
        c = self.cfg
        return c.weight_tv * terms["tv"] + c.weight_time_smoothness * terms["time_smoothness"] + c.weight_time_l1 * terms["time_l1"]

    def regulariser_terms(self) -> dict[str, Tensor]:
        """The unweighted sums {"tv", "time_smoothness", "time_l1"} (scalars), for logging."""
        tv = sum(plane_total_variation(level[p]) for level in self.grids for p in SPACE_PLANES)
        ts = sum(time_smoothness(level[p]) for level in self.grids for p in TIME_PLANES)
        l1 = sum((1 - level[p]).abs().mean() for level in self.grids for p in TIME_PLANES)
        return {"tv": tv, "time_smoothness": ts, "time_l1": l1}
