import torch

from core.cameras import orbit_cameras
from core.cameras import world_to_camera_normals
from core.normal_guidance import normal_guidance_loss
from core.priors.estimators import load_normal_estimator
from renderers.base import RenderOutput


def test_world_normals_facing_the_camera_are_plus_z_in_camera_space():
    cams = orbit_cameras(4, elevation_deg=0, radius=3.0, width=4, height=4)
    toward_camera = cams.positions / cams.positions.norm(dim=-1, keepdim=True)       # [4,3]
    n = toward_camera[:, None, None, :].expand(4, 4, 4, 3)
    cam = world_to_camera_normals(n, cams)
    assert torch.allclose(cam, torch.tensor([0.0, 0.0, 1.0]).expand_as(cam), atol=1e-5)
    up = world_to_camera_normals(torch.tensor([0.0, 0.0, 1.0]).expand(4, 4, 4, 3), cams)
    assert torch.allclose(up, torch.tensor([0.0, 1.0, 0.0]).expand_as(up), atol=1e-5)


def test_normal_guidance_pulls_rendered_normals_to_the_estimate():
    cams = orbit_cameras(1, elevation_deg=0, radius=3.0, width=8, height=8)
    target = torch.nn.functional.normalize(torch.tensor([0.3, 0.2, 1.0]), dim=0)
    estimator = load_normal_estimator(lambda images: target.view(1, 3, 1, 1).expand(images.shape[0], 3, *images.shape[2:]))
    world = torch.randn(1, 8, 8, 3, requires_grad=True)
    optimizer = torch.optim.Adam([world], lr=0.05)
    alpha = torch.zeros(1, 8, 8, 1)
    alpha[:, 2:6, 2:6] = 1.0
    losses = []
    for _ in range(150):
        normal = torch.nn.functional.normalize(world, dim=-1)
        out = RenderOutput(rgb=torch.full((1, 8, 8, 3), 0.5), alpha=alpha, depth=torch.ones(1, 8, 8, 1), normal=normal)
        loss = normal_guidance_loss(out, cams, estimator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    assert losses[-1] < 0.01 < losses[0]
    cam = world_to_camera_normals(torch.nn.functional.normalize(world.detach(), dim=-1), cams)
    assert torch.allclose(cam[0, 3, 3], target, atol=0.05)
    assert world.grad[0, 0, 0].abs().sum() == 0  # masked-out pixels get no pull
