"""The built-in priors: tiny diffusion models trained on the procedural world, shipped with
the code so `scorelift generate "a red cube"` runs on a laptop with no download.

    text/              Stable-Diffusion-format folder (text + camera conditioning), loaded by
                       core.priors.load(PriorConfig(model=TEXT_PRIOR)) like any SD checkpoint
    text_model.py      its architecture; train.py trains it; evaluate.py measures it
    zero123/           zero123-format folder (reference image + relative camera), loaded by
                       core.priors.load(PriorConfig(kind="zero123", model="builtin:zero123"))
    zero123_model.py   its architecture; train_zero123.py trains it; evaluate_zero123.py measures it
    training.py        what the trainers share
"""

from pathlib import Path

TEXT_PRIOR = Path(__file__).with_name("text")
ZERO123_PRIOR = Path(__file__).with_name("zero123")
