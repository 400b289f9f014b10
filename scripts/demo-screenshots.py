"""README's screenshots, from the demo: run ``gpupool demo``, freeze its workload, and save
the console's overview, department and GPU pages with headless Chromium.

    python scripts/demo-screenshots.py [--out docs/img] [--nodes 26] [--freeze-after 60]

Needs Debian's chromium and chromium-driver (as the browser tests do) and the trace.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support import dashboard as sup  # noqa: E402  (Chromium as the tests drive it)

PAGES = {"overview": "", "department": "departments", "gpus": "gpus"}
WIDTH = 1440


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    parser.add_argument("--nodes", type=int, default=26)
    parser.add_argument("--freeze-after", type=float, default=60.0)
    parser.add_argument("--department", default="ml", help="the department page's choice")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gpupool-screens-") as tmp:
        demo = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("gpupool")), "demo",
                "--nodes", str(args.nodes), "--freeze-after", str(args.freeze_after),
                "--store", f"sqlite:///{tmp}/demo.db", "--console-port", "0",
                "--webhook-port", "0", "--exporter-port", "0", "--scrape-interval", "5",
            ],
            cwd=tmp,
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        assert demo.stdout is not None
        try:
            console = ""
            for line in demo.stdout:
                print(line, end="")
                if line.startswith("console: "):
                    console = line.split(": ", 1)[1].strip()
                if "(frozen)" in line:
                    break
            if not console:
                print("gpupool demo did not start", file=sys.stderr)
                return 1
            time.sleep(12)  # a few scrapes of the frozen fleet, for the history plots
            save(console, args.out, args.department)
        finally:
            demo.send_signal(signal.SIGINT)
            demo.communicate(timeout=180)
    return 0


def save(console: str, folder: Path, department: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    folder.mkdir(parents=True, exist_ok=True)
    browser = sup.chromium()
    try:
        for name, path in PAGES.items():
            browser.set_window_size(WIDTH, 1800)
            browser.get(console + path)
            time.sleep(4)
            if name == "department":
                Select(browser.find_element(By.ID, "dept-select")).select_by_value(department)
                time.sleep(3)
            height = browser.execute_script("return document.body.scrollHeight")
            browser.set_window_size(WIDTH, min(int(height) + 40, 4000))
            time.sleep(1)
            target = folder / f"{name}.png"
            browser.save_screenshot(str(target))
            print(f"saved {target}")
    finally:
        browser.quit()


if __name__ == "__main__":
    sys.exit(main())
