import os
import tempfile

import pytest

# gsplat/nerfacc JIT-compile CUDA code on first use; never let that touch a shared dir.
os.environ.setdefault("TORCH_EXTENSIONS_DIR", tempfile.mkdtemp(prefix="scorelift-ext-"))

import torch  # noqa: E402

# Respect an explicit OMP_NUM_THREADS (parallel sessions set 1: oversubscribed torch
# threads on 2 cores run 20-30x slower); otherwise use both cores.
if "OMP_NUM_THREADS" not in os.environ:
    torch.set_num_threads(min(2, os.cpu_count() or 1))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
