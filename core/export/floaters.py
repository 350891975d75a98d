"""Keep the object, drop the floaters: cleaning a generated GaussianScene before export.

Score distillation leaves Gaussians the prior cannot see or does not mind: near-transparent
ones, and small clumps away from the object (a white one over a white background is free).
Three filters, in order:

1. opacity: Gaussians with sigmoid(opacity) < `min_opacity` go (they barely render).
2. connected components: two Gaussians are linked when their centres are closer than
   `link_factor` x the median distance of a Gaussian to its nearest neighbour (the spacing
   of the splat surface), i.e. a surface with no gap wider than that is one component; of the
   components, those whose opacity mass (sum of opacities) is below `min_component` x the
   largest one's go.
3. statistical outliers (Open3D's remove_statistical_outlier): a Gaussian whose mean distance
   to its `outlier_neighbours` nearest neighbours exceeds the mean of that figure by more than
   `outlier_std` standard deviations goes (off when outlier_std is None).

This is for generated objects (one object centred in the unit sphere): a reconstructed scene
of many separate things would lose all but its largest one, so `core.export.assets` runs it
only when ExportOptions.remove_floaters is on (the distillation pipelines' default).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from renderers.gaussian.ply import GaussianData


@dataclass
class FloaterConfig:
    min_opacity: float = 0.05
    link_factor: float = 3.0
    min_component: float = 0.05
    outlier_neighbours: int = 8
    outlier_std: float | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.min_opacity < 1 or not 0 <= self.min_component <= 1 or self.link_factor <= 0:
            raise ValueError("floaters: min_opacity in [0,1), min_component in [0,1], link_factor > 0")


def _subset(data: GaussianData, keep: torch.Tensor) -> GaussianData:
    return GaussianData(*(t[keep] for t in (data.means, data.quats, data.log_scales, data.logit_opacities,
                                            data.sh0, data.shN)))


def component_labels(points: np.ndarray, radius: float) -> np.ndarray:
    """[N] connected-component label of each point [N,3] under links shorter than `radius`."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    pairs = cKDTree(points).query_pairs(radius, output_type="ndarray")
    n = len(points)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def floater_mask(data: GaussianData, cfg: FloaterConfig | None = None) -> torch.Tensor:
    """[N] bool: the Gaussians of `data` to keep (module docstring)."""
    from scipy.spatial import cKDTree

    cfg = cfg or FloaterConfig()
    opacity = torch.sigmoid(data.logit_opacities.float()).cpu()
    keep = opacity >= cfg.min_opacity
    index = keep.nonzero().squeeze(-1).numpy()
    if len(index) < 3:
        # next to nothing is visible (e.g. a run stopped after a few steps): cleaning would
        # leave an empty asset, so keep it as it is
        return torch.ones_like(keep) if len(index) == 0 else keep
    points = data.means.detach().float().cpu().numpy()[index]
    tree = cKDTree(points)
    k = min(cfg.outlier_neighbours, len(points) - 1)
    distances = tree.query(points, k=k + 1)[0][:, 1:]                  # [n,k], self excluded
    labels = component_labels(points, cfg.link_factor * float(np.median(distances[:, 0])))
    mass = np.bincount(labels, weights=opacity.numpy()[index])
    alive = mass[labels] >= cfg.min_component * mass.max()
    if cfg.outlier_std is not None:
        spread = distances.mean(1)
        alive &= spread <= spread.mean() + cfg.outlier_std * spread.std()
    out = torch.zeros_like(keep)
    out[torch.from_numpy(index[alive])] = True
    return out


def remove_floaters(scene, cfg: FloaterConfig | None = None):
    """A new GaussianScene holding only `scene`'s kept Gaussians (same config)."""
    from renderers.gaussian.scene import GaussianScene

    data = scene.to_data()
    data = GaussianData(*(t.detach().cpu() for t in (data.means, data.quats, data.log_scales, data.logit_opacities,
                                                     data.sh0, data.shN)))
    return GaussianScene.from_data(_subset(data, floater_mask(data, cfg)), scene.cfg).to(scene.device)
