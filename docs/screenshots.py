"""Screenshots of the console for the README: ``python docs/screenshots.py REPORT.html docs/``.

Drives headless Chromium through Selenium (``tests/browser.py``): the top of the page, the
charts with a confusion filtered, the task table under that filter, the span map by label.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from browser import chromium, console_errors, open_report


def main(report: str, out: str) -> None:
    dest = Path(out)
    with chromium(1400, 950) as d:
        open_report(d, Path(report))
        d.save_screenshot(str(dest / "console.png"))
        d.execute_script("document.getElementById('filters').style.position='static'")
        # the most frequent confusion, as a click on its cell would set it
        d.execute_script("""
            var a = window.nerq.aggregate(), best = null;
            a.conf.forEach(function (row, g) { row.forEach(function (v, p) {
              if (g !== p && (!best || v > best[2])) best = [g, p, v]; }); });
            window.nerq.setFilter('pair', [best[0], best[1]]);""")
        time.sleep(1.0)
        grid = d.find_element("css selector", "main .grid")
        d.execute_script("arguments[0].scrollIntoView()", grid)
        grid.screenshot(str(dest / "console_charts.png"))
        tasks = d.find_element("id", "tasks")
        d.execute_script("arguments[0].scrollIntoView()", tasks)
        d.set_window_size(1400, 1300)
        time.sleep(0.5)
        d.save_screenshot(str(dest / "console_tasks.png"))
        d.set_window_size(1400, 950)
        d.execute_script("window.nerq.reset()")
        sel = d.find_element("id", "map-colour")
        d.execute_script("arguments[0].value='label'; arguments[0].dispatchEvent(new Event('change'))", sel)
        time.sleep(1.0)
        m = d.find_element("id", "map")
        d.execute_script("arguments[0].scrollIntoView()", m)
        m.screenshot(str(dest / "console_map.png"))
        errs = console_errors(d)
        if errs:
            raise SystemExit(f"console errors: {errs}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
