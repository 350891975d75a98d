"""The web page in a real browser: Debian's Chromium driven by Playwright, against the app
served in this process on a free 127.0.0.1 port with a temporary runs folder. Jobs are made
tiny by the server's own overrides (a few steps, small exports), so the page's fields stay
at their defaults. Screenshots of each state go to $SCORELIFT_ARTIFACTS (default: a pytest
temp folder). `make test` installs chromium (apt) and playwright (pip) when absent; never
`playwright install`, which downloads a browser."""

import io
import json
import os
import re
import socket
import time
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--headless=new", "--use-gl=angle", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]
COMMON = ["preview_every=1", "checkpoint_every=1"]
EXPORT = ["export_options.resolution=24", "export_options.texture_size=32"]
TURNTABLE = ["turntable_frames=6", "turntable_size=64"]  # keys of the 3D jobs (a video job has no turntable)
TINY = {"*": COMMON, "text": ["stages.0.steps=6", *TURNTABLE, *EXPORT],
        "image": ["stages.0.steps=2", "stages.1.steps=1", *TURNTABLE, *EXPORT],
        "relight": ["stages.0.steps=4", "stages.1.steps=2", "stages.2.steps=2", "stages.3.steps=2", "glb_resolution=24",
                    "glb_texture_size=32", "renderer.gaussian.num_points=300", "renderer.pbr.env_height=8", *TURNTABLE],
        # + lift.prior_model=<a tiny Zero123>, built by the server fixture
        "video": ["crop_size=32", "background.steps=2", "lift.steps=2", "motion.steps=2", "motion.sds_every=2",
                  "placement.steps=2"]}
FINAL = ("done", "error", "cancelled")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} is missing: `make test` installs it (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is missing: `make test` installs it")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory):
    folder = Path(os.environ.get("SCORELIFT_ARTIFACTS") or tmp_path_factory.mktemp("web-artefacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from app.web import launch

    from core.priors.tiny import build_tiny_zero123

    runs = tmp_path_factory.mktemp("runs")
    zero123 = build_tiny_zero123(tmp_path_factory.mktemp("zero123") / "zero123")
    overrides = {**TINY, "video": [*TINY["video"], f"lift.prior_model={zero123}"]}
    port = free_port()
    app = launch("127.0.0.1", port, False, runs, job_overrides=overrides, prevent_thread_lock=True)
    yield {"url": f"http://127.0.0.1:{port}", "runs": runs, "app": app}
    app.close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield chromium
        chromium.close()


def open_page(browser, url):
    """A fresh page (its own Gradio session) on the app; generous timeouts, for this machine's
    2 shared cores and software WebGL."""
    context = browser.new_context(viewport={"width": 1400, "height": 1500})
    context.set_default_timeout(120_000)
    page = context.new_page()
    page.goto(url)
    page.wait_for_selector("#text-generate")
    return page


@pytest.fixture
def page(browser, server):
    page = open_page(browser, server["url"])
    yield page
    page.context.close()


def state(page, kind="text") -> str:
    return page.get_attribute(f"#{kind}-progress .sl-progress", "data-state") or ""


def status(page, kind="text") -> str:
    return page.inner_text(f"#{kind}-progress .sl-progress")


def wait_state(page, states, kind="text", timeout=240.0, seen=None) -> str:
    """Poll the progress panel until its state is one of `states`; `seen` collects
    (state, progress, status) samples on the way."""
    end = time.monotonic() + timeout
    script = (f"() => {{ const p = document.querySelector('#{kind}-progress .sl-progress'); return p ? "
              "[p.dataset.state, Number(p.dataset.progress || 0), p.innerText] : ['', 0, ''] }")
    while time.monotonic() < end:
        current, fraction, text = page.evaluate(script)  # one read: the three belong together
        if seen is not None and current:
            seen.append((current, fraction, text))
        if current in states:
            return current
        page.wait_for_timeout(250)
    raise AssertionError(f"still '{state(page, kind)}' after {timeout} s: {status(page, kind)}")


def drawn_fraction(png: bytes) -> float:
    """Fraction of a canvas screenshot's pixels that differ from its corner (background) colour."""
    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    background = pixels[2, 2]
    return float((np.abs(pixels - background).max(-1) > 40).mean())


def wait_drawn(page, selector, timeout=180.0, minimum=0.01) -> float:
    """Screenshot the canvas inside `selector` until it shows something (WebGL draws after load)."""
    end, fraction = time.monotonic() + timeout, 0.0
    while time.monotonic() < end:
        canvas = page.locator(f"{selector} canvas")
        if canvas.count():
            fraction = drawn_fraction(canvas.first.screenshot())
            if fraction >= minimum:
                return fraction
        page.wait_for_timeout(500)
    return fraction


def downloads(page, kind: str) -> dict[str, bytes]:
    """{file name: bytes} of every link in the tab's Downloads, fetched as the browser would."""
    links = page.locator(f"#{kind}-files a[download]")
    names = {}
    for i in range(links.count()):
        href = links.nth(i).get_attribute("href")
        names[href.rsplit("/", 1)[-1]] = page.request.get(href).body()
    return names


def run_dirs(runs: Path) -> set[str]:
    return {p.name for p in runs.iterdir() if p.is_dir() and not p.name.startswith(".")}


def test_defaults_run_to_a_drawn_mesh_splat_and_downloads(page, server, artefacts):
    page.screenshot(path=artefacts / "01_loaded.png", full_page=True)
    assert page.input_value("#text-seed :is(textarea,input)") == "" and page.input_value("#text-steps :is(textarea,input)") == ""
    page.fill("#text-subject :is(textarea,input)", "a red cube")
    page.click("#text-generate")
    seen, preview_while_running, end = [], False, time.monotonic() + 240
    script = ("() => { const p = document.querySelector('#text-progress .sl-progress'); return [p.dataset.state, "
              "Number(p.dataset.progress || 0), p.innerText, !!document.querySelector('#text-preview img')] }")
    while time.monotonic() < end:
        current, fraction, text, has_preview = page.evaluate(script)  # one read: these belong together
        seen.append((current, fraction, text))
        if current == "running" and has_preview and not preview_while_running:
            preview_while_running = True
            page.screenshot(path=artefacts / "02_running.png", full_page=True)
        if current in FINAL:
            break
        page.wait_for_timeout(200)
    assert current == "done", text
    assert preview_while_running, "no preview was shown while the job ran"
    progress = [p for s, p, _ in seen if s == "running"]
    assert len(set(progress)) >= 2 and 0 < max(progress) < 1, seen  # the bar moved
    assert any(re.search(r"step \d+/6 · loss", text) for _, _, text in seen), seen
    assert any("ETA" in text for _, _, text in seen) and any("exporting" in text for _, _, text in seen)

    mesh = wait_drawn(page, "#text-mesh")
    splat = wait_drawn(page, "#text-splat")
    page.screenshot(path=artefacts / "03_done.png", full_page=True)
    assert mesh >= 0.01, f"the mesh viewer drew {mesh:.2%} of its canvas"
    assert splat >= 0.01, f"the splat viewer drew {splat:.2%} of its canvas"
    assert page.locator("#text-turntable video").count() == 1
    metrics = page.inner_text("#text-metrics")
    assert "gaussians" in metrics and "export time" in metrics

    folder = Path(page.input_value("#text-folder :is(textarea,input)"))
    assert folder.parent == server["runs"] and (folder / "model.glb").is_file()
    names = downloads(page, "text")
    for name in ("model.glb", "model.ply", "config.yaml", "turntable.mp4"):
        on_disk = next(folder.rglob(name)).read_bytes()
        assert names.get(name) == on_disk, f"download of {name} differs from the run's file"


def test_cancel_a_running_and_a_queued_job(browser, server, artefacts):
    pages = [open_page(browser, server["url"]) for _ in range(2)]
    first, second = pages
    before = run_dirs(server["runs"])
    first.fill("#text-subject :is(textarea,input)", "a blue sphere")
    first.fill("#text-steps :is(textarea,input)", "400")
    first.click("#text-generate")
    wait_state(first, ("running",))
    second.fill("#text-subject :is(textarea,input)", "a green cone")
    second.click("#text-generate")
    wait_state(second, ("queued",))
    assert "2nd in line" in status(second)
    second.screenshot(path=artefacts / "04_queued.png", full_page=True)
    second.click("#text-cancel")
    assert wait_state(second, FINAL, timeout=120) == "cancelled" and "before it started" in status(second)
    first.wait_for_function("document.querySelector('#text-progress').innerText.includes('step ')", timeout=240_000)
    first.click("#text-cancel")
    assert wait_state(first, FINAL, timeout=120) == "cancelled", status(first)
    first.screenshot(path=artefacts / "05_cancelled.png", full_page=True)
    new = run_dirs(server["runs"]) - before
    assert len(new) == 1 and "blue-sphere" in new.pop()  # the queued job never made a folder
    for p in pages:
        p.context.close()


def test_two_pages_at_once_are_served_in_order_and_both_finish(browser, server, artefacts):
    pages = []
    for prompt in ("a red cube", "a blue cube"):
        page = open_page(browser, server["url"])
        page.fill("#text-subject :is(textarea,input)", prompt)
        pages.append(page)
    pages[0].click("#text-generate")
    pages[1].click("#text-generate")
    seen = []
    wait_state(pages[1], FINAL, seen=seen)
    assert wait_state(pages[0], FINAL) == "done" and state(pages[1]) == "done", status(pages[1])
    assert any(s == "queued" and "in line" in text for s, _, text in seen)
    pages[1].screenshot(path=artefacts / "06_second_of_two_done.png", full_page=True)
    folders = [Path(p.input_value("#text-folder :is(textarea,input)")) for p in pages]
    records = [json.loads((f / "web_job.json").read_text()) for f in folders]
    assert records[0]["ended"] <= records[1]["started"]  # one at a time, first come first served
    for p in pages:
        p.context.close()


def test_bad_inputs_show_one_message_and_leave_no_run(page, server, artefacts, tmp_path):
    before = run_dirs(server["runs"])
    cases = [("", "", "the prompt is empty"), ("a red zeppelin", "", "'zeppelin'"),
             ("a red cube", "no_such_key=1", "no_such_key"), ("a red cube", "just words", "not key=value")]
    for i, (prompt, overrides, message) in enumerate(cases):
        page.fill("#text-subject :is(textarea,input)", prompt)
        page.fill("#text-overrides :is(textarea,input)", overrides)
        page.click("#text-generate")
        page.wait_for_function(f"document.querySelector('#text-progress').innerText.includes({json.dumps(message)})",
                               timeout=120_000)
        assert state(page) == "error" and status(page).startswith("error: "), status(page)
        page.screenshot(path=artefacts / f"07_bad_text_{i}.png", full_page=True)
    page.fill("#text-steps :is(textarea,input)", "0")
    page.fill("#text-subject :is(textarea,input)", "a red cube")
    page.fill("#text-overrides :is(textarea,input)", "")
    page.click("#text-generate")
    page.wait_for_function("document.querySelector('#text-progress').innerText.includes('at least 1')")

    from PIL import Image

    page.click("button[role=tab]:has-text('Image to 3D')")
    text_file = tmp_path / "notes.png"
    text_file.write_text("this is not a picture")
    huge = tmp_path / "huge.png"
    Image.new("RGB", (5000, 8), "white").save(huge)
    for i, (upload, message) in enumerate([(text_file, "not an image"), (huge, "5000x8 px")]):
        page.set_input_files("#image-subject input[type=file]", str(upload))
        page.wait_for_timeout(1500)
        page.click("#image-generate")
        page.wait_for_function(f"document.querySelector('#image-progress').innerText.includes({json.dumps(message)})",
                               timeout=120_000)
        assert status(page, "image").startswith("error: "), status(page, "image")
        page.screenshot(path=artefacts / f"08_bad_image_{i}.png", full_page=True)
        page.click("#image-subject button[aria-label='Remove Image']")
    too_big = tmp_path / "too-big.png"
    too_big.write_bytes(b"\x89PNG" + bytes(26 * 2**20))  # over the 25 MB upload limit
    page.set_input_files("#image-subject input[type=file]", str(too_big))
    page.wait_for_function("document.body.innerText.includes('exceed the maximum allowed size of 25')")
    page.screenshot(path=artefacts / "08_bad_image_too_many_bytes.png", full_page=True)
    assert run_dirs(server["runs"]) == before
    page.reload()  # and the server still serves
    page.wait_for_selector("#text-generate")


def test_an_rgb_picture_on_white_becomes_a_model(page, server, artefacts, tmp_path):
    from PIL import Image

    picture = Image.new("RGB", (96, 96), "white")
    picture.paste((200, 30, 30), (28, 28, 68, 68))
    path = tmp_path / "red-box.jpg"
    picture.save(path, quality=95)
    page.click("button[role=tab]:has-text('Image to 3D')")
    page.set_input_files("#image-subject input[type=file]", str(path))
    page.wait_for_timeout(1500)
    page.click("#image-generate")
    assert wait_state(page, FINAL, kind="image") == "done", status(page, "image")
    fraction = wait_drawn(page, "#image-mesh")
    page.screenshot(path=artefacts / "09_image_done.png", full_page=True)
    assert fraction >= 0.01


def test_relight_a_zipped_dataset_under_an_uploaded_map(page, server, artefacts, tmp_path):
    from tests.blender_zip import blender_zip

    data = blender_zip(tmp_path / "red-cube.zip", size=24)
    envmap = tmp_path / "sky.npy"
    np.save(envmap, np.ones((8, 16, 3), np.float32) * np.array([0.4, 0.6, 1.0], np.float32))
    page.click("button[role=tab]:has-text('Relight')")
    page.set_input_files("#relight-zip input[type=file]", data)
    page.set_input_files("#relight-envmap input[type=file]", str(envmap))
    for box, stem in (("relight-zip", "red-cube"), ("relight-envmap", "sky")):  # shown once uploaded
        page.wait_for_function(f"document.querySelector('#{box}').innerText.includes('{stem}\\n')")
    page.click("#relight-generate")
    seen = []
    assert wait_state(page, FINAL, kind="relight", seen=seen) == "done", status(page, "relight")
    # the stages (4, 2, 2, 2 steps) can pass between two polls of the panel; the export (seconds) cannot
    running = [(p, text) for s, p, text in seen if s == "running"]
    assert any("exporting" in text and "ETA" in text and 0 < p < 1 for p, text in running), seen
    fraction = wait_drawn(page, "#relight-mesh")
    page.screenshot(path=artefacts / "12_relight_done.png", full_page=True)
    assert fraction >= 0.01, f"the PBR mesh viewer drew {fraction:.2%} of its canvas"
    assert page.locator("#relight-turntable video").count() == 1
    assert "gaussians" in page.inner_text("#relight-metrics")
    folder = Path(page.input_value("#relight-folder :is(textarea,input)"))
    assert folder.parent == server["runs"] and folder.name.startswith("relight-red-cube-")
    names = downloads(page, "relight")
    for name in ("model_pbr.ply", "environment.hdr", "model.glb"):
        assert names.get(name) == (folder / name).read_bytes(), f"download of {name} differs from the run's file"
    # the turntable shown is the one under the uploaded map
    shown = page.request.get(page.locator("#relight-turntable video").get_attribute("src")).body()
    assert shown == (folder / "turntable_envmap" / "turntable.mp4").read_bytes()
    assert shown != (folder / "turntable" / "turntable.mp4").read_bytes()  # not the learned environment's


def test_video_to_4d_from_zipped_frames_and_masks(page, server, artefacts, tmp_path):
    """The Video to 4D tab: a bad upload is one message and no run; a 4-frame 64 px clip's zips
    run to the novel-view video, the re-rendered frames and downloads equal to the run's files."""
    import zipfile

    from core.data.video_synth import SyntheticVideoConfig, render_video, write_video

    write_video(render_video(SyntheticVideoConfig(frames=4, width=64, height=64, pan_deg=4.0, dolly=0.0,
                                                  query_stride=12)), tmp_path)
    zips = {}
    for part in ("frames", "masks"):
        zips[part] = tmp_path / f"walk-{part}.zip"
        with zipfile.ZipFile(zips[part], "w") as zf:
            for f in sorted((tmp_path / part).glob("*.png")):
                zf.write(f, f"{part}/{f.name}")
    before = run_dirs(server["runs"])
    page.click("button[role=tab]:has-text('Video to 4D')")
    page.set_input_files("#video-masks-zip input[type=file]", str(zips["masks"]))
    page.wait_for_function("document.querySelector('#video-masks-zip').innerText.includes('walk-masks')")
    page.click("#video-generate")  # no video and no frames zip
    page.wait_for_function("document.querySelector('#video-progress').innerText.includes('neither')")
    assert status(page, "video").startswith("error: ") and run_dirs(server["runs"]) == before
    page.screenshot(path=artefacts / "13_video_bad_input.png", full_page=True)
    page.set_input_files("#video-frames-zip input[type=file]", str(zips["frames"]))
    page.wait_for_function("document.querySelector('#video-frames-zip').innerText.includes('walk-frames')")
    page.fill("#video-resolution :is(textarea,input)", "64")
    page.click("#video-generate")
    # the panel shows the last job's error until this one's stream starts
    page.wait_for_function("!document.querySelector('#video-progress').innerText.includes('neither')")
    seen = []
    assert wait_state(page, FINAL, kind="video", seen=seen) == "done", status(page, "video")
    assert any("stage 'lift_" in text for s, _, text in seen if s == "running"), seen
    page.wait_for_selector("#video-novel-view video")
    page.wait_for_function("document.querySelectorAll('#video-reconstruction img').length >= 4")
    page.screenshot(path=artefacts / "14_video_done.png", full_page=True)
    folder = Path(page.input_value("#video-folder :is(textarea,input)"))
    assert folder.parent == server["runs"] and folder.name.startswith("animate-walk-frames-")
    shown = page.request.get(page.locator("#video-novel-view video").get_attribute("src")).body()
    assert shown == (folder / "novel_view.mp4").read_bytes()
    first = page.locator("#video-reconstruction img").first.get_attribute("src")
    assert page.request.get(first).body() == (folder / "reconstruction" / "frame_0000.png").read_bytes()
    names = downloads(page, "video")
    for name in ("frames.zip", "cameras.json", "novel_view.mp4"):
        assert names.get(name) == (folder / name).read_bytes(), f"download of {name} differs from the run's file"
    assert "novel_view.mp4" in page.inner_text("#video-metrics")  # key_metrics' file sizes


# The table's text has one cell per line; a run's state is the line after its name.
row_state_is = """([name, wanted]) => {
    const lines = document.querySelector('#runs-table').innerText.split('\\n').map(s => s.trim()).filter(Boolean);
    const at = lines.indexOf(name);
    return at >= 0 && lines[at + 1] === wanted;
}"""


def test_runs_tab_lists_runs_and_resumes_a_stopped_one(page, server, artefacts):
    from app.web_runs import read_record, write_record

    page.fill("#text-subject :is(textarea,input)", "a yellow cube")
    page.fill("#text-steps :is(textarea,input)", "12")
    page.click("#text-generate")
    page.wait_for_function("document.querySelector('#text-progress').innerText.includes('step ')", timeout=240_000)
    page.click("#text-cancel")
    assert wait_state(page, FINAL, timeout=120) == "cancelled"
    folder = Path(page.input_value("#text-folder :is(textarea,input)"))
    # As if the server had died while it ran: the record still says running, written by another server.
    write_record(folder, {**read_record(folder), "state": "running", "server": "a-server-that-died"})

    page.click("button[role=tab]:has-text('Runs')")
    page.click("#runs-refresh")
    page.wait_for_function(row_state_is, arg=[folder.name, "stopped"], timeout=120_000)
    page.locator("#runs-chosen input").fill(folder.name)
    page.keyboard.press("Enter")
    page.wait_for_function("document.querySelector('#runs-details').innerText.includes('resumable')")
    assert "true" in page.inner_text("#runs-details") and "prompt" in page.inner_text("#runs-config")
    page.screenshot(path=artefacts / "10_runs_stopped.png", full_page=True)
    page.click("#runs-resume")
    assert wait_state(page, FINAL, kind="runs") == "done", status(page, "runs")
    assert (folder / "model.glb").is_file() and read_record(folder)["state"] == "done"
    page.click("#runs-refresh")
    page.wait_for_function(row_state_is, arg=[folder.name, "done"], timeout=120_000)
    page.screenshot(path=artefacts / "11_runs_resumed.png", full_page=True)


def test_security_defaults(server, page):
    app = server["app"]
    assert app.server_name == "127.0.0.1" and not app.share
    outside = page.request.get(f"{server['url']}/gradio_api/file=/etc/passwd")
    assert outside.status in (403, 404)
    inside = next(server["runs"].rglob("config.yaml"), None)
    if inside is not None:
        assert page.request.get(f"{server['url']}/gradio_api/file={inside}").status == 200
