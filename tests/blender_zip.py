"""A tiny Blender/NeRF-synthetic dataset zipped as the web page's Relight tab takes it (tests/test_web.py,
tests/test_web_browser.py)."""


def blender_zip(path, top="scene", n_views=4, size=16, breakage=None):
    """A tiny Blender dataset (tests/test_relight.py's procedural views) zipped under `top`/
    (top="" puts it at the zip's root); `breakage` drops an image or the transforms file."""
    import zipfile

    from core.data.views import procedural_object, write_procedural_views

    root = path.parent / f"{path.stem}-src"
    write_procedural_views(root, procedural_object("cube", "red", "shiny"), n_views=n_views, size=size)
    if breakage == "missing image":
        (root / "train" / "r_001.png").unlink()
    elif breakage == "no transforms":
        (root / "transforms_train.json").unlink()
    with zipfile.ZipFile(path, "w") as zf:
        for file in sorted(root.rglob("*")):
            if file.is_file():
                zf.write(file, f"{top}/{file.relative_to(root)}" if top else str(file.relative_to(root)))
    return str(path)
