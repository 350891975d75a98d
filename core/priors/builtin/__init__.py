"""The built-in priors: tiny diffusion models trained on the procedural world, shipped with
the code so `scorelift generate "a red cube"` runs on a laptop with no download.

    text/              Stable-Diffusion-format folder (text + camera conditioning), loaded by
                       core.priors.load(PriorConfig(model="builtin:text")) like any SD checkpoint
    zero123/           zero123-format folder (reference image + relative camera), loaded by
                       core.priors.load(PriorConfig(kind="zero123", model="builtin:zero123"))
    normals/           the image-to-normal network (builtin:normals), loaded through
                       normal_model.py by core.priors.estimators
    depth/             the monocular depth network (builtin:depth), loaded through
                       depth_model.py by core.priors.estimators

Training and evaluating them needs the procedural world and its renderers, so it lives
beside the world in core/training/ (`python -m core.training.train text|zero123`,
`python -m core.training.train_normals`, `python -m core.training.train_depth`,
`python -m core.training.evaluate ...`).
"""

from pathlib import Path

TEXT_PRIOR = Path(__file__).with_name("text")
ZERO123_PRIOR = Path(__file__).with_name("zero123")
NORMALS_PRIOR = Path(__file__).with_name("normals")
DEPTH_PRIOR = Path(__file__).with_name("depth")
