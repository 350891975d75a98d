"""GaussianScene (Scene contract) and densification on CPU with the torch rasteriser."""

import math

import pytest
import torch

from core.cameras import Cameras, intrinsics, look_at, orbit_cameras
from core.config import ConfigError, from_dict
from renderers.base import Scene
from gsplat.strategy import MCMCStrategy

from renderers.gaussian.densify import DensifyConfig, compute_relocation, compute_relocation_torch
from renderers.gaussian.ply import GaussianData
from renderers.gaussian.scene import GaussianConfig, GaussianScene


def small_cameras(n=2, size=32):
    return orbit_cameras(n, elevation_deg=20.0, radius=2.5, width=size, height=size)


def train_step(scene, optimizer, step, cameras, target=0.2):
    out = scene.render(cameras)
    loss = (out.rgb - target).square().mean()
    optimizer.zero_grad(set_to_none=True)
    scene.before_backward(step, out)
    loss.backward()
    optimizer.step()
    return scene.update(step, out)


def assert_optimizer_matches(scene, optimizer):
    """Every group holds the scene's current tensor and its Adam moments have its shape."""
    current = {id(t) for t in scene.params.values()}
    for group in optimizer.param_groups:
        (param,) = group["params"]
        assert param is scene.params[group["name"]]
        for key in ("exp_avg", "exp_avg_sq"):
            if key in optimizer.state[param]:
                assert optimizer.state[param][key].shape == param.shape, (group["name"], key)
    assert all(id(p) in current for p in optimizer.state), "stale optimizer state for a replaced tensor"


# --- construction, config ----------------------------------------------------------------------

@pytest.mark.parametrize("sh_degree", [0, 3])
def test_sphere_init(sh_degree):
    cfg = GaussianConfig(num_points=500, sh_degree=sh_degree, init_radius=0.5, init_opacity=0.1)
    scene = GaussianScene(cfg)
    assert isinstance(scene, Scene) and len(scene) == 500
    p = scene.params
    assert p["means"].norm(dim=-1).max() <= 0.5 + 1e-6
    assert p["means"].norm(dim=-1).median() > 0.35  # uniform in the ball: median radius 0.5 * 0.5^(1/3)
    torch.testing.assert_close(torch.sigmoid(p["opacities"]), torch.full((500,), 0.1))
    assert p["sh0"].shape == (500, 1, 3)
    assert ("shN" in p) == (sh_degree > 0)
    if sh_degree:
        assert p["shN"].shape == (500, 15, 3)
    # Scales: mean distance to the 3 nearest neighbours (3DGS), a few hundredths here.
    assert 0.02 < torch.exp(p["scales"]).median() < 0.1
    assert torch.equal(GaussianScene(cfg).params["means"], p["means"])  # seeded


def test_points_init_uses_points_and_colours():
    points = torch.tensor([[0.0, 0, 0], [0.1, 0, 0], [0, 0.2, 0], [0, 0, 0.3]])
    colours = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [0.5, 0.5, 0.5]])
    scene = GaussianScene(GaussianConfig(init="points"), points=points, colors=colours)
    assert torch.equal(scene.params["means"].detach(), points)
    torch.testing.assert_close(0.5 + 0.28209479177387814 * scene.params["sh0"][:, 0].detach(), colours)
    with pytest.raises(ValueError, match="needs points"):
        GaussianScene(GaussianConfig(init="points"))


def test_config_from_plain_data():
    cfg = from_dict(GaussianConfig, {"sh_degree": 2, "densify": {"strategy": "mcmc", "grow_grad2d": 0.001}})
    assert cfg.densify.strategy == "mcmc" and cfg.densify.grow_grad2d == 0.001
    with pytest.raises(ConfigError, match="sh_degree"):
        from_dict(GaussianConfig, {"sh_degree": 4})
    with pytest.raises(ConfigError, match="strategy"):
        from_dict(GaussianConfig, {"densify": {"strategy": "adc"}})


# --- rendering -----------------------------------------------------------------------------------

def test_render_outputs_and_compositing():
    scene = GaussianScene(GaussianConfig(num_points=300, init_opacity=0.5))
    cams = small_cameras()
    white = scene.render(cams, torch.ones(3))
    black = scene.render(cams, torch.zeros(3))
    assert white.rgb.shape == (2, 32, 32, 3) and white.alpha.shape == (2, 32, 32, 1)
    assert white.depth.shape == (2, 32, 32, 1) and white.normal.shape == (2, 32, 32, 3)
    assert white.alpha[:, 16, 16].min() > 0.5
    # Background enters as (1 - alpha) * bg on top of the premultiplied colour.
    torch.testing.assert_close(white.rgb - black.rgb, (1 - white.alpha).expand(-1, -1, -1, 3), atol=1e-5, rtol=0)
    # Depth: expected camera z inside the object's sphere; 0 where nothing was hit.
    covered = white.alpha[..., 0] > 0.5
    assert ((white.depth[..., 0][covered] > 2.0) & (white.depth[..., 0][covered] < 3.0)).all()
    assert (white.depth[white.alpha == 0] == 0).all()
    norms = white.normal[covered].norm(dim=-1)
    torch.testing.assert_close(norms, torch.ones_like(norms), atol=1e-4, rtol=0)


def test_normals_face_the_camera():
    """One flat Gaussian (thin along world x) seen from +x and -x: the normal points at each camera."""
    data = GaussianData(
        means=torch.zeros(1, 3), quats=torch.tensor([[1.0, 0, 0, 0]]),
        log_scales=torch.log(torch.tensor([[0.005, 0.4, 0.4]])), logit_opacities=torch.tensor([3.0]),
        sh0=torch.zeros(1, 1, 3), shN=torch.zeros(1, 0, 3),
    )
    scene = GaussianScene.from_data(data)
    eyes = torch.tensor([[2.0, 0.0, 0.3], [-2.0, 0.0, 0.3]])
    cams = Cameras(look_at(eyes), intrinsics(40.0, 24, 24).expand(2, 3, 3).clone(), 24, 24)
    out = scene.render(cams)
    centre = out.normal[:, 12, 12]
    torch.testing.assert_close(centre, torch.tensor([[1.0, 0, 0], [-1.0, 0, 0]]), atol=1e-4, rtol=0)


def test_gradients_reach_every_parameter():
    scene = GaussianScene(GaussianConfig(num_points=100, sh_degree=1, init_opacity=0.5))
    scene.active_sh_degree = 1
    out = scene.render(small_cameras(1))
    (out.rgb.mean() + out.depth.mean() + out.normal.sum()).backward()
    for name, p in scene.params.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_param_groups_are_named_with_config_rates():
    cfg = GaussianConfig(num_points=10, sh_degree=1, lr_means=0.123)
    scene = GaussianScene(cfg)
    groups = scene.param_groups()
    assert [g["name"] for g in groups] == ["means", "quats", "scales", "opacities", "sh0", "shN"]
    assert groups[0]["lr"] == 0.123 and all(len(g["params"]) == 1 for g in groups)

    class Override:
        lr_means = 0.5
    assert scene.param_groups(Override())[0]["lr"] == 0.5
    with pytest.raises(RuntimeError, match="param_groups"):
        scene.attach_optimizer(torch.optim.Adam(scene.params.values()))


# --- densification -------------------------------------------------------------------------------

def test_default_strategy_duplicates_splits_and_prunes():
    """20 small + 20 large visible Gaussians with gradients over the threshold, 10 nearly transparent:
    one refine step duplicates the small, splits the large (scale / 1.6) and prunes the transparent."""
    g = torch.Generator().manual_seed(1)
    n_small, n_large, n_dead = 20, 20, 10
    n = n_small + n_large + n_dead
    log_scales = torch.full((n, 3), math.log(0.005))
    log_scales[n_small:n_small + n_large] = math.log(0.05)
    opacity = torch.full((n,), 0.5)
    opacity[n_small + n_large:] = 0.001  # below prune_opa, and too faint to be rasterised
    data = GaussianData(
        means=(torch.rand(n, 3, generator=g) - 0.5) * 0.8, quats=torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
        log_scales=log_scales, logit_opacities=torch.logit(opacity),
        sh0=torch.randn(n, 1, 3, generator=g), shN=torch.zeros(n, 0, 3),
    )
    densify = DensifyConfig(grow_grad2d=1e-12, grow_scale3d=0.01, refine_start=0, refine_every=1)
    scene = GaussianScene.from_data(data, GaussianConfig(densify=densify))
    optimizer = torch.optim.Adam(scene.param_groups())
    scene.attach_optimizer(optimizer)
    large_before = torch.exp(scene.params["scales"][n_small:n_small + n_large]).detach().clone()

    stats = train_step(scene, optimizer, 1, small_cameras(2))
    assert len(scene) == 2 * n_small + 2 * n_large == stats["n_gaussians"]
    assert torch.sigmoid(scene.params["opacities"]).min() >= densify.prune_opa
    scales = torch.exp(scene.params["scales"]).detach()
    # (One Adam step moved log-scales by at most lr = 0.005 before refining: rtol 2 %.)
    assert torch.isclose(scales, torch.tensor(0.005), rtol=0.02).all(-1).sum() == 2 * n_small
    # gsplat keeps unselected ones first, then duplicates, then the split pairs at the end.
    torch.testing.assert_close(scales[-2 * n_large:], (large_before / 1.6).repeat(2, 1), rtol=0.02, atol=0)
    assert_optimizer_matches(scene, optimizer)
    train_step(scene, optimizer, 2, small_cameras(2))  # the resized optimizer keeps working
    assert_optimizer_matches(scene, optimizer)


def test_max_gaussians_cap_and_refine_window():
    densify = DensifyConfig(grow_grad2d=1e-12, refine_start=0, refine_every=1, refine_stop=3, max_gaussians=70)
    scene = GaussianScene(GaussianConfig(num_points=50, init_opacity=0.5, densify=densify))
    optimizer = torch.optim.Adam(scene.param_groups())
    scene.attach_optimizer(optimizer)
    cams = small_cameras(1, 24)
    train_step(scene, optimizer, 1, cams)
    assert len(scene) == 70
    train_step(scene, optimizer, 3, cams)  # refine_stop reached: nothing changes
    assert len(scene) == 70
    assert_optimizer_matches(scene, optimizer)


def test_opacity_reset_and_strategy_none():
    densify = DensifyConfig(refine_start=100, reset_every=2, prune_opa=0.005)
    scene = GaussianScene(GaussianConfig(num_points=30, init_opacity=0.5, sh_degree=1, densify=densify))
    optimizer = torch.optim.Adam(scene.param_groups())
    scene.attach_optimizer(optimizer)
    cams = small_cameras(1, 16)
    train_step(scene, optimizer, 1, cams)
    assert torch.sigmoid(scene.params["opacities"]).min() > 0.4
    train_step(scene, optimizer, 2, cams)
    assert torch.sigmoid(scene.params["opacities"]).max() <= 0.01 + 1e-6  # reset to 2 * prune_opa
    assert scene.active_sh_degree == 0
    scene.update(1000, None)  # the SH schedule: one more degree every sh_degree_interval steps
    assert scene.active_sh_degree == 1

    still = GaussianScene(GaussianConfig(num_points=30, densify=DensifyConfig(strategy="none")))
    optimizer = torch.optim.Adam(still.param_groups())  # never attached: "none" needs no optimizer
    out = still.render(cams)
    out.rgb.mean().backward()
    assert still.update(500, out) == {} and len(still) == 30


def test_update_without_before_backward_or_optimizer_is_an_error():
    densify = DensifyConfig(refine_start=0, refine_every=1)
    scene = GaussianScene(GaussianConfig(num_points=20, densify=densify))
    out = scene.render(small_cameras(1, 16))
    out.rgb.mean().backward()
    with pytest.raises(RuntimeError, match="before_backward"):
        scene.update(1, out)
    out = scene.render(small_cameras(1, 16))
    scene.before_backward(1, out)
    out.rgb.mean().backward()
    with pytest.raises(RuntimeError, match="attach_optimizer"):
        scene.update(1, out)


def relocation_reference(opacity: float, scale: float, n: int) -> tuple[float, float]:
    """gsplat's relocation CUDA kernel, line by line in Python floats (3DGS-MCMC eq. 9)."""
    new_opacity = 1.0 - (1.0 - opacity) ** (1.0 / n)
    denom = 0.0
    for i in range(1, n + 1):
        for k in range(i):
            denom += math.comb(i - 1, k) * ((-1.0) ** k / math.sqrt(k + 1)) * new_opacity ** (k + 1)
    return new_opacity, opacity / denom * scale


def test_relocation_matches_the_kernel_formula():
    opacities = torch.tensor([0.05, 0.3, 0.7, 0.95, 0.5, 0.9])
    ratios = torch.tensor([1, 2, 3, 5, 8, 12])
    scales = torch.rand(6, 3) + 0.1
    new_o, new_s = compute_relocation_torch(opacities, scales, ratios, MCMCStrategy().initialize_state()["binoms"])
    for i in range(6):
        ref_o, ref_s = relocation_reference(float(opacities[i]), 1.0, int(ratios[i]))
        assert new_o[i].item() == pytest.approx(ref_o, rel=1e-5)
        torch.testing.assert_close(new_s[i], scales[i] * ref_s, rtol=1e-4, atol=0)
        # n copies composited give back the original opacity.
        assert 1 - (1 - new_o[i].item()) ** int(ratios[i]) == pytest.approx(opacities[i].item(), rel=1e-5)
    torch.testing.assert_close(new_s[0], scales[0])  # one copy: unchanged


@pytest.mark.cuda
def test_relocation_torch_matches_gsplat_cuda():
    opacities = torch.rand(256, device="cuda") * 0.9 + 0.05
    scales = torch.rand(256, 3, device="cuda") + 0.1
    ratios = torch.randint(1, 20, (256,), device="cuda")
    binoms = MCMCStrategy().initialize_state()["binoms"].cuda()
    cuda_o, cuda_s = compute_relocation(opacities, scales, ratios, binoms)
    torch_o, torch_s = compute_relocation_torch(opacities, scales, ratios, binoms)
    torch.testing.assert_close(cuda_o, torch_o, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(cuda_s, torch_s, rtol=1e-3, atol=1e-6)


def test_mcmc_relocates_dead_and_grows_on_cpu():
    densify = DensifyConfig(strategy="mcmc", refine_start=0, refine_every=1, max_gaussians=63)
    scene = GaussianScene(GaussianConfig(num_points=60, init_opacity=0.5, densify=densify))
    with torch.no_grad():
        scene.params["opacities"][:10] = torch.logit(torch.tensor(0.001))
    optimizer = torch.optim.Adam(scene.param_groups())
    scene.attach_optimizer(optimizer)
    reg = scene.regularisers()
    assert set(reg) == {"opacity_reg", "scale_reg"}
    means_before = scene.params["means"].detach().clone()
    train_step(scene, optimizer, 1, small_cameras(1, 24))
    assert len(scene) == 63  # +5 % capped at max_gaussians
    assert torch.sigmoid(scene.params["opacities"]).min() > densify.prune_opa
    assert not torch.equal(scene.params["means"][:60].detach(), means_before)
    assert_optimizer_matches(scene, optimizer)


# --- checkpoints and files -----------------------------------------------------------------------

def test_state_dict_survives_a_changed_count_and_resumes_the_optimizer():
    densify = DensifyConfig(grow_grad2d=1e-12, refine_start=0, refine_every=1)
    cfg = GaussianConfig(num_points=30, sh_degree=1, init_opacity=0.5, densify=densify)
    scene = GaussianScene(cfg)
    optimizer = torch.optim.Adam(scene.param_groups())
    scene.attach_optimizer(optimizer)
    cams = small_cameras(1, 24)
    train_step(scene, optimizer, 1, cams)
    assert len(scene) > 30
    state, opt_state = scene.state_dict(), optimizer.state_dict()

    fresh = GaussianScene(cfg)
    fresh_optimizer = torch.optim.Adam(fresh.param_groups())
    fresh.load_state_dict(state)
    fresh.rebind_optimizer(fresh_optimizer)
    fresh_optimizer.load_state_dict(opt_state)
    assert len(fresh) == len(scene)
    for name in scene.params:
        assert torch.equal(fresh.params[name], scene.params[name])
    assert_optimizer_matches(fresh, fresh_optimizer)
    torch.testing.assert_close(fresh.render(cams).rgb, scene.render(cams).rgb)
    assert torch.equal(fresh.densifier.state["grad2d"], scene.densifier.state["grad2d"])
    train_step(fresh, fresh_optimizer, 2, cams)

    other_degree = GaussianScene(GaussianConfig(num_points=30, sh_degree=2))
    with pytest.raises(RuntimeError, match="sh_degree"):
        other_degree.load_state_dict(state)


def test_export_and_load_render_the_same(tmp_path):
    scene = GaussianScene(GaussianConfig(num_points=80, sh_degree=2, init_opacity=0.4))
    with torch.no_grad():
        scene.params["shN"].normal_(0, 0.1)
    scene.active_sh_degree = 2
    path = scene.export(tmp_path / "scene")
    assert path.suffix == ".ply"
    loaded = GaussianScene.load(path)
    assert loaded.cfg.sh_degree == 2 and loaded.active_sh_degree == 2
    cams = small_cameras(1, 24)
    torch.testing.assert_close(loaded.render(cams).rgb, scene.render(cams).rgb)
    splat = GaussianScene.load(scene.export(tmp_path / "scene.splat"))
    assert len(splat) == 80 and "shN" not in splat.params


def test_runner_densifies_and_resumes_exactly(tmp_path):
    """core.runner drives the scene (before_backward, update, rebind_optimizer on resume): 3 steps,
    then resuming to 6, ends where 6 uninterrupted steps end, although N changed on the way."""
    from core.cameras import CameraSamplerConfig, RandomCameraSampler
    from core.runner import Batch, RunFolder, SilentCallbacks, Stage, run_stage

    densify = DensifyConfig(grow_grad2d=1e-12, refine_start=0, refine_every=2, max_gaussians=200)
    cfg = GaussianConfig(num_points=40, init_opacity=0.5, densify=densify)

    def stage(steps):
        scene = GaussianScene(cfg)
        optimizer = torch.optim.Adam(scene.param_groups())
        scene.attach_optimizer(optimizer)
        sampler = RandomCameraSampler(CameraSamplerConfig(batch_size=1, width=16, height=16), seed=3)

        def loss(out, batch, step, progress):
            return (out.rgb - 0.3).square().mean(), {}

        return Stage("gs", scene, steps, lambda step: Batch(sampler(step)), loss, optimizer,
                     stateful={"sampler": sampler})

    torch.manual_seed(0)
    whole = stage(6)
    run_stage(whole, RunFolder(tmp_path / "whole"), SilentCallbacks())
    torch.manual_seed(0)
    run_stage(stage(3), RunFolder(tmp_path / "split"), SilentCallbacks())
    resumed = stage(6)
    run_stage(resumed, RunFolder(tmp_path / "split"), SilentCallbacks())
    assert len(whole.scene) > 40 and len(resumed.scene) == len(whole.scene)
    for name in whole.scene.params:
        torch.testing.assert_close(resumed.scene.params[name], whole.scene.params[name])
    assert_optimizer_matches(resumed.scene, resumed.optimizer)
