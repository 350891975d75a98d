"""VSD's variational score: a LoRA copy of the teacher's UNet that learns the distribution
of the current renders (ProlificDreamer, Wang et al. 2023, Sec. 4 and Algorithm 1).

The LoRA lives inside the prior's own UNet as a peft adapter named "vsd": the teacher
(`prior.predict_noise`) runs with adapters disabled, the variational branch runs with
"vsd" enabled through `prior.denoiser`. ProlificDreamer conditions the LoRA on the camera
through the UNet's class embedding; Stable Diffusion's UNet has none, so a small camera
MLP is added to the time embedding while (and only while) the LoRA branch runs. Its last
layer starts at zero, so at step 0 the variational branch equals the teacher's
conditional branch. A UNet that already has a class embedding gets the camera through it.

The LoRA trains on the renders of a step only once that step is taken: `update` queues the
detached renders and `step` (called by the runner right after its own optimizer step, never
on a step it skips for a NaN/Inf loss or gradient) runs the LoRA's updates. A stage that
ends calls `close`, which takes the adapter and its forward hook off the shared prior, so
the next VSD/DSD stage on the same prior starts its own.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from core.priors.base import Cond, add_noise

ADAPTER = "vsd"
TARGET_MODULES = ["to_q", "to_k", "to_v", "to_out.0"]


@dataclass
class LoraConfig:
    """rank / alpha: LoRA rank r and scale numerator (peft's lora_alpha; update scale alpha/r).
    lr, weight_decay: the LoRA's own AdamW. camera_dropout: fraction of training samples whose
    camera is zeroed (so the LoRA also learns a camera-free branch for its own CFG).
    camera_hidden: width of the camera MLP. train_steps: LoRA updates per objective call.
    guidance_scale: CFG of the LoRA branch between camera and no camera (1 = camera only,
    ProlificDreamer's setting). t_min, t_max: fractions of T the LoRA is trained on."""

    rank: int = 4
    alpha: float = 4.0
    lr: float = 1e-3
    weight_decay: float = 0.0
    camera_dropout: float = 0.1
    camera_hidden: int = 256
    train_steps: int = 1
    guidance_scale: float = 1.0
    t_min: float = 0.0
    t_max: float = 1.0

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError(f"lora.rank must be >= 1, got {self.rank}")
        if not 0.0 <= self.camera_dropout <= 1.0:
            raise ValueError(f"lora.camera_dropout must lie in [0,1], got {self.camera_dropout}")
        if not 0.0 <= self.t_min < self.t_max <= 1.0:
            raise ValueError(f"lora.t_min/t_max must satisfy 0 <= t_min < t_max <= 1, got {self.t_min}, {self.t_max}")


def add_vsd_adapter(unet: nn.Module, rank: int, alpha: float) -> list[nn.Parameter]:
    """Attach the "vsd" LoRA adapter to a diffusers UNet2DConditionModel (left disabled) and
    return its trainable parameters, made float32 (AdamW on fp16 weights loses the updates)."""
    import peft

    if ADAPTER in (getattr(unet, "peft_config", None) or {}):
        raise ValueError(f"the UNet already has a '{ADAPTER}' adapter: build one VSD/DSD objective per prior")
    unet.add_adapter(peft.LoraConfig(r=rank, lora_alpha=alpha, target_modules=TARGET_MODULES), adapter_name=ADAPTER)
    unet.disable_adapters()
    params = []
    for name, p in unet.named_parameters():
        if "lora_" in name and f".{ADAPTER}." in name:
            p.data = p.data.float()
            p.requires_grad_(True)
            params.append(p)
    return params


class CameraEmbedding(nn.Module):
    """camera features [B,k] -> [B,D] added to the UNet time embedding; zero at init."""

    def __init__(self, camera_dim: int, hidden: int, embed_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(camera_dim, hidden), nn.SiLU(), nn.Linear(hidden, embed_dim))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, camera: Tensor) -> Tensor:
        return self.net(camera)


class LoraVariational:
    """The variational score eps_lora(x_t, t, y, c) of VSD, trained on the renders.

    Needs `prior.unet` (diffusers UNet2DConditionModel) and `prior.denoiser`. Satisfies
    `core.distill.objectives.VariationalScore`.
    """

    def __init__(self, prior, cfg: LoraConfig | None = None) -> None:
        unet = getattr(prior, "unet", None)
        if unet is None or not hasattr(unet, "add_adapter"):
            raise ValueError("VSD/DSD need a prior with a diffusers UNet (`prior.unet`) for the LoRA branch; "
                             f"{type(prior).__name__} has none. Pass a `variational` score explicitly instead.")
        self.prior, self.unet, self.cfg = prior, unet, cfg or LoraConfig()
        self.lora_params = add_vsd_adapter(unet, self.cfg.rank, self.cfg.alpha)
        # The adapter's layers, found once: diffusers' unet.enable_adapters()/disable_adapters()
        # walk all ~900 modules each call (39 ms a toggle pair on the built-in prior, a fifth of
        # a DSD step on the CPU); toggling these 56 layers directly takes 5.5 ms.
        from peft.tuners.tuners_utils import BaseTunerLayer

        self._lora_layers = [m for m in unet.modules() if isinstance(m, BaseTunerLayer)]
        self.uses_class_embedding = getattr(unet, "class_embedding", None) is not None
        self.camera_mlp: CameraEmbedding | None = None
        self.camera_dim: int | None = None
        self.optimizer = torch.optim.AdamW(self.lora_params, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        self._camera: Tensor | None = None
        self._pending: tuple[Tensor, Cond, Tensor | None] | None = None
        self._hook = unet.time_embedding.register_forward_hook(self._add_camera)

    # --- camera conditioning -------------------------------------------------------------

    def _ensure_camera_mlp(self, camera_dim: int) -> None:
        if self.camera_mlp is not None:
            if camera_dim != self.camera_dim:
                raise ValueError(f"camera features changed size: {camera_dim} vs {self.camera_dim}")
            return
        embed_dim = self.unet.time_embedding.linear_2.out_features
        device = next(self.unet.parameters()).device
        self.camera_mlp = CameraEmbedding(camera_dim, self.cfg.camera_hidden, embed_dim).to(device)
        self.camera_dim = camera_dim
        self.optimizer.add_param_group({"params": list(self.camera_mlp.parameters())})

    def _add_camera(self, module, inputs, emb: Tensor):
        if self._camera is None or self.camera_mlp is None:
            return None
        delta = self.camera_mlp(self._camera.float())
        if delta.shape[0] != emb.shape[0]:  # a denoiser that batches branches repeats the cameras
            delta = delta.repeat(emb.shape[0] // delta.shape[0], 1)
        return emb + delta.to(emb.dtype)

    @contextlib.contextmanager
    def active(self, camera: Tensor | None):
        """Run the UNet with the "vsd" adapter on and `camera` [B,k] (or None) in the time
        embedding; restores the teacher (adapters off, no camera) on exit."""
        if camera is not None and not self.uses_class_embedding:
            self._ensure_camera_mlp(camera.shape[-1])
        self._set_adapters(True)
        self._camera = None if self.uses_class_embedding else camera
        try:
            yield
        finally:
            self._camera = None
            self._set_adapters(False)

    def _set_adapters(self, enabled: bool) -> None:
        """The "vsd" adapter on or off, as unet.enable_adapters()/disable_adapters() do
        (including peft's requires_grad=False on disabling), on the cached layers only."""
        for layer in self._lora_layers:
            layer.enable_adapters(enabled)

    def _branch(self, x_t: Tensor, t: Tensor, cond: Cond, camera: Tensor | None) -> Tensor:
        """The LoRA network's eps; call inside `active(camera)`."""
        class_camera = camera if self.uses_class_embedding else cond.camera
        return self.prior.denoiser(x_t, t, cond.embeds, class_camera, cond.extras)

    # --- VariationalScore -----------------------------------------------------------------

    @torch.no_grad()
    def predict(self, x_t: Tensor, t: Tensor, cond: Cond, camera: Tensor | None) -> Tensor:
        """eps_lora [B,C,h,w] for x_t [B,C,h,w], t [B], camera features [B,k] or None."""
        with self.active(camera):
            eps = self._branch(x_t, t, cond, camera)
        s = self.cfg.guidance_scale
        if s != 1.0 and camera is not None:
            nocam = torch.zeros_like(camera)
            with self.active(nocam):
                eps_nocam = self._branch(x_t, t, cond, nocam)
            eps = eps_nocam + s * (eps - eps_nocam)
        return eps

    def update(self, x0: Tensor, cond: Cond, camera: Tensor | None) -> dict[str, float]:
        """Queue this step's detached renders x0 [B,C,h,w] (with their cond and camera [B,k]
        or None) for `step`; the LoRA is not touched until the step is taken."""
        self._pending = (x0.detach(), cond, None if camera is None else camera.detach())
        return {}

    def step(self) -> dict[str, float]:
        """Train the LoRA (and camera MLP) on the queued renders with the standard diffusion
        loss ||eps_lora(x_t, t) - eps||^2 on a fresh t and noise, `train_steps` times
        (ProlificDreamer Algorithm 1, step 3). Called after the scene's optimizer step; an
        update whose LoRA loss is not finite is skipped. Returns {"lora_loss": float} (mean
        of the finite updates), {} when nothing was queued."""
        if self._pending is None:
            return {}
        x0, cond, camera = self._pending
        self._pending = None
        ac = self.prior.alphas_cumprod
        T = ac.shape[0]
        B = x0.shape[0]
        lo, hi = round(self.cfg.t_min * (T - 1)), round(self.cfg.t_max * (T - 1))
        losses = []
        with torch.enable_grad():
            for _ in range(self.cfg.train_steps):
                t = torch.randint(lo, hi + 1, (B,), device=x0.device)
                noise = torch.randn_like(x0)
                x_t = add_noise(x0, noise, t, ac)
                cam = camera
                if camera is not None and self.cfg.camera_dropout > 0:
                    keep = (torch.rand(B, 1, device=camera.device) >= self.cfg.camera_dropout).to(camera.dtype)
                    cam = camera * keep
                # Backward inside `active`: peft's disable_adapters() sets requires_grad=False on
                # the LoRA weights, and autograd then drops their gradients.
                with self.active(cam):
                    eps = self._branch(x_t, t, cond, cam)
                    loss = torch.nn.functional.mse_loss(eps.float(), noise.float())
                    self.optimizer.zero_grad(set_to_none=True)
                    if torch.isfinite(loss):
                        loss.backward()
                if torch.isfinite(loss):
                    self.optimizer.step()
                    losses.append(float(loss.detach()))
                self.optimizer.zero_grad(set_to_none=True)
        stats = {"lora_loss": sum(losses) / len(losses)} if losses else {}
        if len(losses) < self.cfg.train_steps:
            stats["lora_skipped"] = float(self.cfg.train_steps - len(losses))
        return stats

    def close(self) -> None:
        """Take the "vsd" adapter, its camera hook and any queued renders off the prior's
        UNet: the teacher is as it was loaded, and another LoraVariational can be built on it."""
        self._pending = None
        self._hook.remove()
        if ADAPTER in (getattr(self.unet, "peft_config", None) or {}):
            self.unet.delete_adapters(ADAPTER)
            if not getattr(self.unet, "peft_config", None):  # none left: unwrap peft's layers, the UNet as loaded
                self.unet.unload_lora()
        self._lora_layers = []

    def state_dict(self) -> dict:
        lora = {n: p.detach().clone() for n, p in self.unet.named_parameters()
                if "lora_" in n and f".{ADAPTER}." in n}
        return {
            "lora": lora,
            "camera_dim": self.camera_dim,
            "camera_mlp": None if self.camera_mlp is None else self.camera_mlp.state_dict(),
            "optimizer": self.optimizer.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        params = dict(self.unet.named_parameters())
        missing = [n for n in state["lora"] if n not in params]
        if missing:
            raise ValueError(f"checkpoint LoRA does not fit this UNet (e.g. {missing[0]})")
        with torch.no_grad():
            for n, v in state["lora"].items():
                params[n].copy_(v)
        if state["camera_dim"] is not None:
            self._ensure_camera_mlp(state["camera_dim"])
            self.camera_mlp.load_state_dict(state["camera_mlp"])
        self.optimizer.load_state_dict(state["optimizer"])
