"""Screenshot TensorBoard on a run directory (docs/tensorboard.png): starts ``tensorboard
--logdir RUN_DIR`` on a loopback port, opens it in Debian's chromium driven by Playwright (as
tests/test_serve.py does), waits for the charts and saves the page.

    python scripts/tensorboard_screenshot.py RUN_DIR docs/tensorboard.png
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("output")
    parser.add_argument("--filter", default="", help="show only the tags matching this regex")
    parser.add_argument("--height", type=int, default=1000, help="the window's height in pixels")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("no chromium here (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    port = free_port()
    board = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", args.run_dir,
                              "--host", "127.0.0.1", "--port", str(port)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/?tagFilter={args.filter}#timeseries"
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, headless=True,
                                        args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": args.height})
            for _ in range(60):  # the server takes a few seconds to start
                try:
                    page.goto(url, wait_until="networkidle")
                    break
                except Exception:
                    time.sleep(1)
            page.wait_for_timeout(8000)  # the charts and images load after the page
            close = page.locator("button[aria-label='Close side pane']")
            if close.count():  # the settings pane takes a third of the width
                close.first.click()
                page.wait_for_timeout(2000)
            Path(args.output).parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=args.output, full_page=True)
            browser.close()
    finally:
        board.terminate()
        board.wait(timeout=30)
    print(f"screenshot written to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
