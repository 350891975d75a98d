"""Density + colour fields and the normals they imply.

A field is anything callable as `field(points [N,3], dirs [N,3], normals) ->
(sigma [N] >= 0, rgb [N,3] in [0,1], normal [N,3] unit or None)`, `normals` one of
NORMAL_METHODS, and has `density(points) -> sigma`. The volume renderer
only sees that call, so the learnable `NerfField` and the closed-form `AnalyticField`
(used by tests and by anyone baking a known shape) go through the same rendering path.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from renderers.nerf.encoding import GridEncoding


class _TruncExp(torch.autograd.Function):
    """exp(x) whose gradient uses exp(min(x, 15)) (torch-ngp's trunc_exp), so a large raw
    density cannot blow up the backward pass."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return grad * torch.exp(x.clamp(max=15.0))


def trunc_exp(x: Tensor) -> Tensor:
    return _TruncExp.apply(x)


DENSITY_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {"softplus": F.softplus, "trunc_exp": trunc_exp}


NORMAL_METHODS = ("analytic", "finite_difference", "none")


def density_and_normals(
    fn: Callable[[Tensor], tuple[Tensor, Tensor]],
    density_fn: Callable[[Tensor], Tensor],
    points: Tensor,
    method: str = "analytic",
    eps: float = 1e-2,
) -> tuple[Tensor, Tensor, Tensor]:
    """Run `fn(points [N,3]) -> (sigma [N], extra [N,...])` and take normals [N,3] as the
    negative normalised density gradient n = -grad(sigma) / |grad(sigma)|, world space.

    analytic: the autograd gradient, returned detached: a normal to look at or shade with.
      Training through it needs grid_sample's double backward, which torch 2.11 lacks (seen
      on the GPU machine), and costs a second backward pass.
    finite_difference: central differences of `density_fn` at +-eps along each axis; stays
      differentiable on any torch, so normal regularisers (DreamFusion's orientation loss)
      can train the field, at the price of 6 extra density evaluations per sample.
    A density with no gradient (piecewise constant) gets zero normals.
    """
    if method == "finite_difference":
        sigma, extra = fn(points)
        offsets = eps * torch.cat([torch.eye(3), -torch.eye(3)]).to(points)
        shifted = density_fn((points[None] + offsets[:, None]).reshape(-1, 3)).view(6, -1)
        grad = (shifted[:3] - shifted[3:]).t() / (2 * eps)
        return sigma, extra, -F.normalize(grad, dim=-1, eps=1e-12)
    if method != "analytic":
        raise ValueError(f"normals must be one of {NORMAL_METHODS}, got {method!r}")
    keep_graph = torch.is_grad_enabled()
    with torch.enable_grad():
        points = points.detach().requires_grad_(True)
        sigma, extra = fn(points)
        grad = None
        if sigma.requires_grad:
            # retain_graph: the loss still backpropagates through sigma and extra afterwards.
            (grad,) = torch.autograd.grad(sigma.sum(), points, retain_graph=keep_graph, allow_unused=True)
    if grad is None:
        grad = torch.zeros_like(points)
    normal = -F.normalize(grad.detach(), dim=-1, eps=1e-12)
    if not keep_graph:
        sigma, extra = sigma.detach(), extra.detach()
    return sigma, extra, normal


def _mlp(in_dim: int, hidden_dim: int, n_hidden_layers: int, out_dim: int) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True)]
    for _ in range(n_hidden_layers - 1):
        layers += [nn.Linear(hidden_dim, hidden_dim), nn.ReLU(inplace=True)]
    layers.append(nn.Linear(hidden_dim, out_dim))
    return nn.Sequential(*layers)


class NerfField(nn.Module):
    """Grid encoding + two small MLP heads (density, colour), text-to-3D style.

    sigma(x) = act(mlp_sigma(enc(x)) + blob(x)), with the Magic3D density bias
    blob(x) = blob_density * (1 - |x| / blob_radius), so training starts from a centred blob.
    rgb(x, d) = sigmoid(mlp_rgb(enc(x) [, d])).
    """

    def __init__(
        self,
        encoding: GridEncoding,
        hidden_dim: int = 32,
        n_hidden_layers: int = 1,
        density_activation: str = "softplus",
        blob_density: float = 10.0,
        blob_radius: float = 0.5,
        view_dependent: bool = False,
        normal_eps: float = 1e-2,
    ) -> None:
        super().__init__()
        self.normal_eps = normal_eps
        self.encoding = encoding
        self.density_mlp = _mlp(encoding.output_dim, hidden_dim, n_hidden_layers, 1)
        self.view_dependent = view_dependent
        self.color_mlp = _mlp(encoding.output_dim + (3 if view_dependent else 0), hidden_dim, n_hidden_layers, 3)
        self.activation = DENSITY_ACTIVATIONS[density_activation]
        self.blob_density = blob_density
        self.blob_radius = blob_radius

    def density_bias(self, points: Tensor) -> Tensor:
        """[N,3] -> [N]: Magic3D blob, blob_density * (1 - |x| / blob_radius)."""
        return self.blob_density * (1 - points.norm(dim=-1) / self.blob_radius)

    def _density_from_features(self, features: Tensor, points: Tensor) -> Tensor:
        return self.activation(self.density_mlp(features).squeeze(-1) + self.density_bias(points))

    def _color_from_features(self, features: Tensor, dirs: Tensor | None) -> Tensor:
        if self.view_dependent:
            features = torch.cat([features, dirs], dim=-1)
        return torch.sigmoid(self.color_mlp(features))

    def density(self, points: Tensor) -> Tensor:
        """points [N,3] world -> sigma [N] >= 0 (per unit length)."""
        return self._density_from_features(self.encoding(points), points)

    def color(self, points: Tensor, dirs: Tensor | None = None) -> Tensor:
        """points [N,3], unit view dirs [N,3] (ignored unless view_dependent) -> rgb [N,3] in [0,1]."""
        return self._color_from_features(self.encoding(points), dirs)

    def forward(self, points: Tensor, dirs: Tensor, normals: str = "none"):
        """points, dirs [N,3] -> sigma [N], rgb [N,3], normal [N,3] or None; one encoding pass."""
        if normals == "none":
            features = self.encoding(points)
            return self._density_from_features(features, points), self._color_from_features(features, dirs), None

        def density_and_color(p: Tensor) -> tuple[Tensor, Tensor]:
            features = self.encoding(p)
            return self._density_from_features(features, p), self._color_from_features(features, dirs)

        return density_and_normals(density_and_color, self.density, points, normals, self.normal_eps)


class AnalyticField(nn.Module):
    """A field from closed-form functions: density_fn(points [N,3]) -> sigma [N] and
    color_fn(points, dirs) -> rgb [N,3] (default white)."""

    def __init__(
        self,
        density_fn: Callable[[Tensor], Tensor],
        color_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
        normal_eps: float = 1e-3,
    ):
        super().__init__()
        self.normal_eps = normal_eps
        self.density_fn = density_fn
        self.color_fn = color_fn or (lambda points, dirs: torch.ones_like(points))

    def density(self, points: Tensor) -> Tensor:
        return self.density_fn(points)

    def color(self, points: Tensor, dirs: Tensor | None = None) -> Tensor:
        return self.color_fn(points, dirs)

    def forward(self, points: Tensor, dirs: Tensor, normals: str = "none"):
        if normals == "none":
            return self.density_fn(points), self.color_fn(points, dirs), None
        return density_and_normals(
            lambda p: (self.density_fn(p), self.color_fn(p, dirs)), self.density_fn, points, normals, self.normal_eps
        )
