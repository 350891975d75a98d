"""Tiled front-to-back compositing of projected Gaussians in pure torch (the CPU backend).

Same conventions as gsplat's CUDA rasteriser (3DGS, Kerbl et al. 2023, eq. 3):
alpha = min(0.999, o exp(-power)) with power = 0.5 (a dx^2 + c dy^2) + b dx dy at pixel
centres (+0.5); a Gaussian is skipped where alpha < 1/255 or power < 0; a pixel stops
before the Gaussian that would bring its transmittance to <= 1e-4 (so the included
Gaussians are a prefix of its depth-sorted list); colour = sum_i T_i alpha_i c_i + T bg,
alpha = 1 - T.

How: (tile, Gaussian) pairs are built with tensor ops and sorted by (tile, depth). Each
tile's list is cut into chunks of `chunk` Gaussians; step l composites the l-th chunk of
every still-active tile at once as [tiles, pixels, chunk] tensors, carrying per-pixel
transmittance and a done flag, so memory follows the pair count, not pixels x Gaussians.
The backward pass (a hand-written one; autograd through cumprod is slow and keeps every
intermediate) walks the chunks back to front from the saved exp(-power) (pairs x tile
pixels floats), with the suffix sum sum_{j>i} w_j (c_j . g) carried per pixel, as
gsplat's backward kernel does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

TILE_SIZE = 16
ALPHA_THRESHOLD = 1.0 / 255.0  # alphas below this are skipped
ALPHA_MAX = 0.999  # alphas are clamped here; no gradient through a clamped alpha
T_MIN = 1e-4  # a pixel stops before its transmittance would fall to this
EPS2D = 0.3  # low-pass filter added to every 2D covariance (pixels^2)
CHUNK = 64  # Gaussians per tile composited in one step
MAX_STEP_ELEMENTS = 1 << 20  # cap on tiles * pixels * chunk per step (bounds the workspace)


@dataclass
class TileIntersections:
    """Sorted (tile, Gaussian) pairs for C images of tile_height x tile_width tiles.

    Tiles are numbered globally: image * tile_height * tile_width + ty * tile_width + tx.
    tiles_per_gauss [C,N] int32, tile_ids [M] int64 (sorted), flatten_ids [M] int64 index into
    the flattened [C*N] Gaussians (depth-sorted within a tile), tile_counts / tile_offsets
    [C*TH*TW] int64: each tile's run in the sorted list.
    """

    tile_size: int
    tile_width: int
    tile_height: int
    n_images: int
    tiles_per_gauss: Tensor
    tile_ids: Tensor
    flatten_ids: Tensor
    tile_counts: Tensor
    tile_offsets: Tensor

    @property
    def n_pairs(self) -> int:
        return self.flatten_ids.numel()

    def isect_offsets(self) -> Tensor:
        """[C,TH,TW] int32 start of each tile's run, as gsplat's `isect_offsets`."""
        return self.tile_offsets.view(self.n_images, self.tile_height, self.tile_width).int()


@torch.no_grad()
def intersect_tiles(means2d: Tensor, radii: Tensor, depths: Tensor, width: int, height: int,
                    tile_size: int = TILE_SIZE) -> TileIntersections:
    """(tile, Gaussian) pairs for every tile a Gaussian's radius box touches, like gsplat's isect_tiles.

    means2d [C,N,2] pixels, radii [C,N,2] int (0: culled), depths [C,N] camera z.
    Vectorised: pair k of Gaussian g enumerates its tile box row-major.
    """
    C, N = depths.shape
    device = means2d.device
    tile_width, tile_height = math.ceil(width / tile_size), math.ceil(height / tile_size)
    centre = means2d.detach() / tile_size
    extent = radii.to(centre.dtype) / tile_size
    limit = torch.tensor([tile_width, tile_height], device=device)
    tile_min = torch.minimum(torch.floor(centre - extent).long().clamp(min=0), limit)
    tile_max = torch.minimum(torch.ceil(centre + extent).long().clamp(min=0), limit)
    box = tile_max - tile_min  # [C,N,2]
    tiles_per_gauss = box[..., 0] * box[..., 1] * (radii > 0).all(dim=-1)

    counts = tiles_per_gauss.flatten()
    n_pairs = int(counts.sum())
    gauss = torch.repeat_interleave(torch.arange(C * N, device=device), counts)  # [M]
    first = torch.cumsum(counts, 0) - counts
    local = torch.arange(n_pairs, device=device) - first[gauss]
    box_w = box[..., 0].flatten()[gauss]
    tx = tile_min[..., 0].flatten()[gauss] + local % box_w
    ty = tile_min[..., 1].flatten()[gauss] + local // box_w
    tile = (gauss // N) * (tile_height * tile_width) + ty * tile_width + tx

    # Depth rank within each image makes (tile, depth) one integer key.
    order = torch.argsort(depths.detach(), dim=-1, stable=True)
    rank = torch.empty_like(order).scatter_(-1, order, torch.arange(N, device=device).expand(C, N))
    key, perm = torch.sort(tile * N + rank.flatten()[gauss])
    n_tiles = C * tile_height * tile_width
    tile_ids = key // N
    tile_counts = torch.bincount(tile_ids, minlength=n_tiles)
    return TileIntersections(
        tile_size, tile_width, tile_height, C, tiles_per_gauss.int(), tile_ids, gauss[perm],
        tile_counts, torch.cumsum(tile_counts, 0) - tile_counts)


def composite_tiles(means2d: Tensor, conics: Tensor, opacities: Tensor, colors: Tensor, radii: Tensor,
                    depths: Tensor, width: int, height: int, backgrounds: Tensor | None = None,
                    chunk: int = CHUNK, tile_size: int = TILE_SIZE) -> tuple[Tensor, Tensor, dict]:
    """Composite projected Gaussians into C images, differentiably.

    means2d [C,N,2], conics [C,N,3], opacities [C,N] in [0,1], colors [C,N,D],
    radii [C,N,2] (0: culled), depths [C,N], backgrounds [C,D] or None.
    Returns colours [C,H,W,D], alphas [C,H,W,1] and meta entries describing the tiling.
    """
    isect = intersect_tiles(means2d, radii, depths, width, height, tile_size)
    inputs = (means2d, conics, opacities, colors, backgrounds)
    differentiable = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs)
    render_colors, render_alphas = _CompositeTiles.apply(*inputs, isect, width, height, chunk, differentiable)
    meta = {
        "tile_width": isect.tile_width, "tile_height": isect.tile_height,
        "tiles_per_gauss": isect.tiles_per_gauss, "flatten_ids": isect.flatten_ids,
        "isect_offsets": isect.isect_offsets(), "n_pairs": isect.n_pairs,
    }
    return render_colors, render_alphas, meta


class _Geometry:
    """Pixel layout of the tiles: local pixel centres, tile origins, in-image masks."""

    def __init__(self, isect: TileIntersections, width: int, height: int, dtype, device):
        ts = isect.tile_size
        self.ts, self.P = ts, ts * ts
        self.tw, self.th, self.C = isect.tile_width, isect.tile_height, isect.n_images
        self.width, self.height = width, height
        self.centres = torch.arange(ts, dtype=dtype, device=device) + 0.5  # [ts]
        tiles = torch.arange(self.C * self.th * self.tw, device=device)
        self.image = tiles // (self.th * self.tw)
        rem = tiles % (self.th * self.tw)
        self.origin_x = ((rem % self.tw) * ts).to(dtype)
        self.origin_y = ((rem // self.tw) * ts).to(dtype)
        local = torch.arange(ts, device=device)
        inside_x = (rem % self.tw)[:, None] * ts + local[None, :] < width  # [T,ts]
        inside_y = (rem // self.tw)[:, None] * ts + local[None, :] < height
        self.inside = (inside_y[:, :, None] & inside_x[:, None, :]).reshape(-1, self.P)  # [T,P]

    def to_tiles(self, image: Tensor) -> Tensor:
        """[C,H,W,X] -> [C*TH*TW, P, X], zero outside the image."""
        C, H, W, X = image.shape
        ts = self.ts
        padded = image.new_zeros(C, self.th * ts, self.tw * ts, X)
        padded[:, :H, :W] = image
        return padded.view(C, self.th, ts, self.tw, ts, X).permute(0, 1, 3, 2, 4, 5).reshape(-1, self.P, X)

    def to_image(self, tiles: Tensor) -> Tensor:
        """[C*TH*TW, P, X] -> [C,H,W,X]."""
        ts, X = self.ts, tiles.shape[-1]
        img = tiles.view(self.C, self.th, self.tw, ts, ts, X).permute(0, 1, 3, 2, 4, 5)
        return img.reshape(self.C, self.th * ts, self.tw * ts, X)[:, : self.height, : self.width].contiguous()


def _chunk_gaussians(tiles: Tensor, start: int, chunk: int, isect: TileIntersections, geo: _Geometry,
                     means2d: Tensor, conics: Tensor, opacities: Tensor):
    """The Gaussians [start, start+chunk) of each tile in `tiles` [T], relative to the tile.

    means2d [C*N,2], conics [C*N,3], opacities [C*N] flattened. Returns gid [T,K] (flat
    Gaussian ids; padding points at a real one and gets o = 0), dx, dy [T,ts,K] (pixel
    centre minus mean along each axis) and a, b, c, o [T,K].
    """
    slot = start + torch.arange(chunk, device=tiles.device)
    valid = slot[None, :] < isect.tile_counts[tiles][:, None]
    idx = (isect.tile_offsets[tiles][:, None] + slot[None, :]).clamp(max=isect.n_pairs - 1)
    gid = isect.flatten_ids[idx]  # [T,K]
    mx = means2d[gid, 0] - geo.origin_x[tiles][:, None]
    my = means2d[gid, 1] - geo.origin_y[tiles][:, None]
    a, b, c = conics[gid].unbind(-1)
    o = opacities[gid].masked_fill(~valid, 0.0)
    dx = geo.centres[None, :, None] - mx[:, None, :]  # [T,ts(x),K]
    dy = geo.centres[None, :, None] - my[:, None, :]  # [T,ts(y),K]
    return gid, dx, dy, a, b, c, o


class _Workspace:
    """Reusable flat buffers for the [T,P,K] temporaries of one pass.

    On CPU every fresh multi-MB tensor is fresh pages from the kernel (page faults on first
    touch), which cost more than the arithmetic; writing into a few reused buffers avoids it.
    """

    def __init__(self, numel: int, dtype, device):
        self.numel, self.dtype, self.device = numel, dtype, device
        self.buffers: dict[str, Tensor] = {}

    def __call__(self, name: str, shape) -> Tensor:
        if name not in self.buffers:
            self.buffers[name] = torch.empty(self.numel, dtype=self.dtype, device=self.device)
        return self.buffers[name][: math.prod(shape)].view(shape)


def _gaussian_falloff(dx: Tensor, dy: Tensor, a: Tensor, b: Tensor, c: Tensor, ws: _Workspace) -> Tensor:
    """vis = exp(-power) [T,P,K] at every tile pixel (a new tensor), 0 where power < 0 (gsplat skips those)."""
    T, ts, K = dx.shape
    # The pixel grid is separable: only the b dx dy term needs the full [T,ts,ts,K] grid.
    neg_half_ax2 = -0.5 * a[:, None, :] * dx * dx
    neg_half_cy2 = -0.5 * c[:, None, :] * dy * dy
    vis = torch.add(neg_half_cy2[:, :, None, :], neg_half_ax2[:, None, :, :])
    vis.addcmul_(dy[:, :, None, :], (-b[:, None, :] * dx)[:, None, :, :])
    power_ok = torch.le(vis, 0.0, out=ws("mask", vis.shape))
    return vis.exp_().mul_(power_ok).view(T, ts * ts, K)


def _alphas(vis: Tensor, o: Tensor, ws: _Workspace) -> tuple[Tensor, Tensor]:
    """alpha = min(o vis, 0.999), 0 below 1/255, and `kept` = 1 where alpha > 0; both [T,P,K] views of ws."""
    alpha = torch.mul(vis, o[:, None, :], out=ws("alpha", vis.shape)).clamp_(max=ALPHA_MAX)
    kept = torch.ge(alpha, ALPHA_THRESHOLD, out=ws("kept", vis.shape))
    return alpha.mul_(kept), kept


def _transmittance(alpha: Tensor, T0: Tensor, done0: Tensor, ws: _Workspace):
    """Front-to-back compositing of one chunk: alpha [T,P,K], carried T0 and done0 [T,P].

    Returns 1 - alpha, T_before (transmittance in front of each Gaussian), included (1
    before the pixel's stop, else 0), weights w = alpha T_before included, all [T,P,K]
    views of ws, and T_end, done_end [T,P].
    """
    # A finished pixel starts from T = 0, so every Gaussian of the chunk is excluded there.
    T_start = torch.where(done0, torch.zeros_like(T0), T0)
    one_minus = torch.neg(alpha, out=ws("one_minus", alpha.shape)).add_(1.0)
    T_after = torch.cumprod(one_minus, dim=-1, out=ws("T_after", alpha.shape)).mul_(T_start[..., None])
    T_before = ws("T_before", alpha.shape)
    T_before[..., 0] = T_start
    T_before[..., 1:] = T_after[..., :-1]
    included = torch.gt(T_after, T_MIN, out=ws("included", alpha.shape))
    w = torch.mul(alpha, T_before, out=ws("w", alpha.shape)).mul_(included)
    n_inc = included.sum(dim=-1)
    last = T_after.gather(-1, (n_inc - 1).clamp(min=0).long()[..., None])[..., 0]
    T_end = torch.where(n_inc > 0, last, T0)
    done_end = done0 | (T_after[..., -1] <= T_MIN)
    return one_minus, T_before, included, w, T_end, done_end


def _steps(tiles: Tensor, chunk: int, P: int):
    """Split one level's tiles into batches of at most MAX_STEP_ELEMENTS tile-pixel-chunk entries."""
    return tiles.split(_tiles_per_step(chunk, P))


def _tiles_per_step(chunk: int, P: int) -> int:
    return max(1, MAX_STEP_ELEMENTS // (P * chunk))


class _CompositeTiles(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d, conics, opacities, colors, backgrounds, isect, width, height, chunk, differentiable):
        C, N = opacities.shape
        D = colors.shape[-1]
        dtype, device = means2d.dtype, means2d.device
        geo = _Geometry(isect, width, height, dtype, device)
        m2, con, op = means2d.reshape(C * N, 2), conics.reshape(C * N, 3), opacities.reshape(C * N)
        col = colors.reshape(C * N, D)

        n_tiles = C * geo.th * geo.tw
        T_final = torch.ones(n_tiles, geo.P, dtype=dtype, device=device)
        done = ~geo.inside  # pixels outside the image never composite
        acc = torch.zeros(n_tiles, geo.P, D, dtype=dtype, device=device)
        records = []
        level_tiles = torch.nonzero(isect.tile_counts > 0).flatten()
        ws = _Workspace(min(len(level_tiles), _tiles_per_step(chunk, geo.P)) * geo.P * chunk, dtype, device)
        start = 0
        while level_tiles.numel() > 0:
            still = []
            for tiles in _steps(level_tiles, chunk, geo.P):
                gid, dx, dy, a, b, c, o = _chunk_gaussians(tiles, start, chunk, isect, geo, m2, con, op)
                vis = _gaussian_falloff(dx, dy, a, b, c, ws)
                alpha, _ = _alphas(vis, o, ws)
                T0, done0 = T_final[tiles], done[tiles]
                *_, w, T_end, done_end = _transmittance(alpha, T0, done0, ws)
                acc[tiles] += torch.bmm(w, col[gid])
                T_final[tiles], done[tiles] = T_end, done_end
                if differentiable:  # vis (pairs x pixels floats) is kept so the backward pass skips the exp
                    records.append((tiles, start, T0, done0, vis))
                still.append(tiles[~done_end.all(dim=-1)])
            start += chunk
            level_tiles = torch.cat(still)
            level_tiles = level_tiles[isect.tile_counts[level_tiles] > start]

        if backgrounds is not None:
            acc = acc + T_final[..., None] * backgrounds[geo.image][:, None, :]
        render_colors = geo.to_image(acc)
        render_alphas = geo.to_image(1.0 - T_final[..., None])
        ctx.save_for_backward(means2d, conics, opacities, colors, backgrounds, T_final)
        ctx.records, ctx.isect, ctx.geo, ctx.chunk, ctx.ws_numel = records, isect, geo, chunk, ws.numel
        return render_colors, render_alphas

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_colors, grad_alphas):
        means2d, conics, opacities, colors, backgrounds, T_final = ctx.saved_tensors
        isect, geo, chunk = ctx.isect, ctx.geo, ctx.chunk
        C, N = opacities.shape
        D = colors.shape[-1]
        m2, con, op = means2d.reshape(C * N, 2), conics.reshape(C * N, 3), opacities.reshape(C * N)
        col = colors.reshape(C * N, D)

        g = geo.to_tiles(grad_colors.to(T_final.dtype))  # [T,P,D]
        g_alpha = geo.to_tiles(grad_alphas.to(T_final.dtype))[..., 0]  # [T,P]
        # Everything behind a Gaussian that its alpha scales: the background and the alpha output.
        behind = -g_alpha
        grad_bg = None
        if backgrounds is not None:
            behind = behind + (g * backgrounds[geo.image][:, None, :]).sum(-1)
            if ctx.needs_input_grad[4]:
                grad_bg = (T_final[..., None] * g).sum(1).view(C, -1, D).sum(1)
        behind = behind * T_final
        suffix = torch.zeros_like(T_final)  # sum over later chunks of w (c . g), per pixel

        grad_m2, grad_con = torch.zeros_like(m2), torch.zeros_like(con)
        grad_op, grad_col = torch.zeros_like(op), torch.zeros_like(col)
        ws = _Workspace(ctx.ws_numel, T_final.dtype, T_final.device)
        for tiles, start, T0, done0, vis in reversed(ctx.records):
            gid, dx, dy, a, b, c, o = _chunk_gaussians(tiles, start, chunk, isect, geo, m2, con, op)
            alpha, kept = _alphas(vis, o, ws)
            one_minus, T_before, included, w, _, _ = _transmittance(alpha, T0, done0, ws)
            shape = alpha.shape
            g_t = g[tiles]  # [T,P,D]
            flat = gid.flatten()
            grad_col.index_add_(0, flat, torch.bmm(g_t.transpose(1, 2), w).transpose(1, 2).flatten(0, 1))

            cg = torch.bmm(g_t, col[gid].transpose(1, 2), out=ws("cg", shape))  # c_i . g
            csum = torch.cumsum(torch.mul(w, cg, out=ws("tmp", shape)), dim=-1, out=ws("csum", shape))
            total = csum[..., -1].clone()
            # sum_{j>i} w_j (c_j . g) + what lies behind the chunk, the background and alpha terms included.
            after = torch.sub((suffix[tiles] + behind[tiles] + total)[..., None], csum, out=ws("tmp", shape))
            d_alpha = torch.div(after, one_minus, out=ws("csum", shape)).neg_().addcmul_(T_before, cg)
            suffix[tiles] += total
            # Excluded, skipped (alpha 0) and clamped alphas pass no gradient to o, conic or mean.
            live = torch.mul(vis, o[:, None, :], out=ws("tmp", shape))
            live = torch.le(live, ALPHA_MAX, out=ws("cg", shape)).mul_(included).mul_(kept)

            v = d_alpha.mul_(live).mul_(vis)  # d alpha / d o = vis
            grad_op.index_add_(0, flat, v.sum(1).flatten())
            d_power = v.mul_(-o[:, None, :]).view(len(tiles), geo.ts, geo.ts, -1)  # [T,y,x,K]
            rows = d_power.sum(1)  # [T,x,K]
            cols = d_power.sum(2)  # [T,y,K]
            dy_rows = torch.mul(d_power, dy[:, :, None, :], out=ws("tmp", shape).view(d_power.shape)).sum(1)
            sum_dx = (dx * rows).sum(1)  # [T,K] sum_p d_power dx
            sum_dy = (dy * cols).sum(1)
            grad_con.index_add_(0, flat, torch.stack([
                0.5 * (dx * dx * rows).sum(1), (dx * dy_rows).sum(1), 0.5 * (dy * dy * cols).sum(1),
            ], dim=-1).flatten(0, 1))
            # dx = pixel - mean, so d power / d mean = -(conic @ (dx, dy)).
            grad_m2.index_add_(0, flat, torch.stack([
                -(a * sum_dx + b * sum_dy), -(b * sum_dx + c * sum_dy),
            ], dim=-1).flatten(0, 1))

        return (grad_m2.view(C, N, 2), grad_con.view(C, N, 3), grad_op.view(C, N), grad_col.view(C, N, D),
                grad_bg, None, None, None, None, None)
