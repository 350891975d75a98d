import json

import pytest

from app.cli import main
from app.jobs import BatchFileError, read_jobs
from core.data.procedural import CAPTION_WORDS, VIEW_WORDS
from core.priors.tiny import build_tiny_stable_diffusion


@pytest.fixture(scope="module")
def tiny_prior(tmp_path_factory):
    path = tmp_path_factory.mktemp("prior") / "tiny-sd"
    build_tiny_stable_diffusion(path, sample_size=32, words=CAPTION_WORDS + VIEW_WORDS, class_embed_dim=16)
    return str(path)


def fast(prior):
    return [f"prior.model={prior}", "stages.0.steps=2", "turntable_frames=0", "export=[ply]", "preview_every=0",
            "gaussian.num_points=100"]


def manifest(out):
    return [json.loads(l) for l in (out / "manifest.jsonl").read_text().splitlines()]


def test_batch_records_each_prompt_skips_finished_and_survives_a_failure(tiny_prior, tmp_path, capsys):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "a red cube"}\n\n{"prompt": "a blue cone", "overrides": ["gaussian.num_points=0"]}\n'
                       '{"prompt": "a green torus"}\n')
    out = tmp_path / "batch"
    assert main(["batch", str(prompts), "--out", str(out), *fast(tiny_prior)]) == 1  # one failed
    records = manifest(out)
    assert [r["status"] for r in records] == ["done", "failed", "done"]
    assert "num_points must be at least 1" in records[1]["error"]
    run = out / records[0]["folder"].split("/")[-1]
    assert (run / "model.ply").is_file()
    # The job's wall time covers its steps (each timed in the run's metrics.jsonl) and more (export).
    step_times = [json.loads(l)["time_s"] for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["metrics"]["step"] == 2 and len(step_times) == 2
    assert records[0]["time_s"] > sum(step_times)
    assert "2 done, 1 failed" in capsys.readouterr().out

    # Re-run: the finished prompts are skipped, the failed one is tried again (and fails again).
    assert main(["batch", str(prompts), "--out", str(out), *fast(tiny_prior)]) == 1
    assert [r["status"] for r in manifest(out)[3:]] == ["failed"]
    assert "0 done, 1 failed, 2 already done" in capsys.readouterr().out


def test_txt_prompts_one_per_line(tmp_path):
    (tmp_path / "p.txt").write_text("# shapes\na red cube\n\n  a green torus  \n")
    assert [j.prompt for j in read_jobs(tmp_path / "p.txt")] == ["a red cube", "a green torus"]


def test_jsonl_jobs_carry_seed_and_overrides(tiny_prior, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "a red cube", "seed": 3, "overrides": ["stages.0.steps=3"]}\n')
    out = tmp_path / "b"
    assert main(["batch", str(prompts), "--out", str(out), *fast(tiny_prior)]) == 0
    record = manifest(out)[0]
    assert record["seed"] == 3 and record["metrics"]["step"] == 3


def test_bad_prompt_files_are_one_line_errors(tmp_path, capsys):
    assert main(["batch", str(tmp_path / "none.txt")]) == 2
    assert "prompts file not found" in capsys.readouterr().err
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    assert main(["batch", str(tmp_path / "empty.txt")]) == 2
    (tmp_path / "bad.jsonl").write_text('{"prompt": "a cube", "sed": 1}\n')
    with pytest.raises(BatchFileError, match=r"bad.jsonl:1: unknown keys \['sed'\]"):
        read_jobs(tmp_path / "bad.jsonl")
