"""bench/gpu.py on a machine without CUDA: it imports, answers --help, says plainly that it
needs a GPU, and its --tiny --device cpu mode runs the same timing code on a tiny teacher."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "bench" / "gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_help_runs_as_a_script():
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu.py"), "--help"], capture_output=True,
                            text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "--tiny" in result.stdout and "--skip-tests" in result.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without CUDA")
def test_without_cuda_it_says_so_and_exits_2(capsys):
    assert load_bench().main(["--skip-tests"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: bench/gpu.py needs a CUDA GPU") and "--tiny --device cpu" in err
    assert len(err.splitlines()) == 1


def test_tiny_cpu_smoke_run_exercises_the_timing_code(tmp_path, capsys):
    """A smoke test of the code path (the runner's step, the parts, the rasteriser); the numbers
    themselves are measured by the bench on a GPU, not judged here."""
    out = tmp_path / "bench.json"
    assert load_bench().main(["--tiny", "--device", "cpu", "--skip-tests", "--repeats", "1", "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    for kind in ("sds", "dsd"):
        r = results[kind]
        assert r["latent_size"] == [16, 16]  # the tiny VAE halves 32 px renders
        assert r["ratio"] == pytest.approx(r["step_ms"] / (r["unet_cfg_ms"] + r["vae_encode_ms"]))
    assert "lora_update_ms" in results["dsd"] and "lora_update_ms" not in results["sds"]
    assert set(results["rasterise"]) == {"torch_ms"}  # gsplat needs CUDA: only the torch tiles ran
    printed = capsys.readouterr().out
    assert "sds: step" in printed and "dsd: step" in printed and "rasterise 2000 Gaussians" in printed
