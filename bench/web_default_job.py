"""Time one job of the web page as a new user runs it: serve the app (127.0.0.1, a free port,
a fresh runs folder), open it in Debian's chromium through Playwright, type a prompt, press
Generate with every other field at its default, and wait for the end. Prints the ETA the page
showed along the way against the time that was really left, and the job's training / export /
total seconds (from its run record); saves a screenshot of the finished page.

    python bench/web_default_job.py [--prompt "a red cube"] [--runs DIR] [--screenshot PATH] [KEY=VALUE ...]

KEY=VALUE overrides go to the server (as `scorelift web KEY=VALUE`), e.g. stages.0.steps=5 for a
quick check that the script works; without them the job is the page's default.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import tempfile
import time
from pathlib import Path

ARGS = ["--no-sandbox", "--headless=new", "--use-gl=angle", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]


def seconds(text: str) -> float | None:
    """'1 min 05 s' / '42 s' -> seconds."""
    match = re.search(r"ETA ~(?:(\d+) min )?(\d+) s", text)
    return None if match is None else int(match.group(1) or 0) * 60 + int(match.group(2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompt", default="a red cube")
    parser.add_argument("--runs", type=Path, default=None)
    parser.add_argument("--screenshot", type=Path, default=Path("web_default_job.png"))
    parser.add_argument("overrides", nargs="*", help="server-side job overrides (default: none)")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    from app.web import launch

    runs = args.runs or Path(tempfile.mkdtemp(prefix="web-bench-"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = launch("127.0.0.1", port, False, runs, job_overrides=args.overrides, prevent_thread_lock=True)
    etas = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1500})
        page.set_default_timeout(120_000)
        page.goto(f"http://127.0.0.1:{port}")
        page.wait_for_selector("#text-generate")
        page.fill("#text-subject textarea", args.prompt)
        start = time.monotonic()
        page.click("#text-generate")
        while True:
            state, text = page.evaluate("() => { const p = document.querySelector('#text-progress .sl-progress');"
                                        " return [p.dataset.state, p.innerText] }")
            if seconds(text) is not None:
                etas.append((time.monotonic() - start, seconds(text), text))
            if state in ("done", "error", "cancelled"):
                break
            time.sleep(1)
        end = time.monotonic()
        page.wait_for_timeout(20_000)  # the viewers load and draw
        page.screenshot(path=args.screenshot, full_page=True)
        browser.close()
    app.close()
    print(f"final state: {state}: {text}")
    for at, eta, line in etas[:: max(1, len(etas) // 12)]:
        print(f"at {at:6.1f} s the page said ETA {eta:4.0f} s; really left {end - start - at:6.1f} s")
    record = json.loads(next(runs.glob("*/web_job.json")).read_text())
    print(json.dumps({k: round(record[k], 1) for k in ("train_s", "export_s", "total_s") if k in record}))
    print(f"click to done, seen by the browser: {end - start:.1f} s; screenshot: {args.screenshot}")


if __name__ == "__main__":
    main()
