"""Training and evaluating the built-in priors on the procedural world (core/data).

The teachers themselves (their shipped weights and what loads them) live in
core/priors/builtin; this part builds, trains and measures them, which needs the world's
renders and its renderers, so it sits beside the world and above the teachers.

    common.py              what the trainers share: shards, checkpoints, resume, time budget
    text_model.py          the built-in text prior's architecture (SD components, small)
    train.py               `python -m core.training.train text|zero123 ...` (the text trainer)
    zero123_model.py       the built-in Zero123 prior's architecture
    train_zero123.py       its trainer (reached through train.py zero123)
    train_normals.py       `python -m core.training.train_normals` (builtin:normals)
    evaluate.py            `python -m core.training.evaluate ...` (text prior quality)
    evaluate_zero123.py    `python -m core.training.evaluate_zero123 ...`
    evaluate_normals.py    `python -m core.training.evaluate_normals ...`
    depth_alignment.py     scale-and-shift fit and invariant loss of relative depth
    train_depth.py         `python -m core.training.train_depth` (builtin:depth)
    evaluate_depth.py      `python -m core.training.evaluate_depth ...`
"""
