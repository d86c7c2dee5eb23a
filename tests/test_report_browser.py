"""The HTML report in a real browser: headless Chromium loads it offline, draws the plots and the grid of
adversarial examples, logs no errors.

Needs Debian's ``chromium`` and ``chromium-driver`` (``make system`` installs them). The driver is started
from ``/usr/bin/chromedriver`` explicitly, so selenium-manager never downloads anything.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelsec.report import write_html
from tests.report_fixtures import make_audit_result, write_adversarial_npz

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
        reason=f"needs {CHROMIUM} and {CHROMEDRIVER} (Debian packages chromium, chromium-driver)",
    ),
]


@pytest.fixture
def driver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    home = tmp_path / "home"
    for name, sub in [
        ("HOME", ""),
        ("XDG_CONFIG_HOME", ".config"),
        ("XDG_CACHE_HOME", ".cache"),
        ("XDG_DATA_HOME", ".local/share"),
    ]:
        (home / sub).mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv(name, str(home / sub))

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,2000",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=str(CHROMEDRIVER), log_output=str(tmp_path / "chromedriver.log"))
    drv = webdriver.Chrome(service=service, options=options)
    try:
        drv.set_page_load_timeout(15)
        yield drv
    finally:
        drv.quit()


def test_report_renders_in_chromium(driver: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    result = make_audit_result()
    assert result.robustness is not None and result.robustness.adversarial_file is not None
    assert result.privacy is not None
    write_adversarial_npz(tmp_path / result.robustness.adversarial_file)  # write_html finds it next to the page
    images = np.full((len(result.privacy.exposed_records), 1, 28, 28), 0.5, np.float32)
    page = write_html(result, tmp_path / "report.html", exposed_images=images)
    driver.get(page.as_uri())

    for img_id in ("robustness-plot", "roc-plot", "examples-grid"):
        loaded = driver.execute_script(
            "const img = document.getElementById(arguments[0]);"
            "return img !== null && img.complete && img.naturalWidth > 0 && img.naturalHeight > 0;",
            img_id,
        )
        assert loaded, f"#{img_id} did not load"
        shown_width = driver.execute_script(
            "return document.getElementById(arguments[0]).getBoundingClientRect().width;", img_id
        )
        assert shown_width > 200, f"#{img_id} is drawn {shown_width}px wide"

    verdict = driver.find_element(By.ID, "verdict")
    assert verdict.is_displayed()
    assert result.verdict.headline in verdict.text
    top = driver.execute_script("return arguments[0].getBoundingClientRect().top;", verdict)
    assert top < 400, "the verdict should be visible without scrolling"

    # Nothing was fetched: every resource the page loaded is the page itself or a data: URI.
    urls = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name);")
    assert all(u.startswith("data:") for u in urls), urls

    # The grid is drawn no wider than the page and keeps its aspect ratio (one row of three panels per example).
    natural, shown = driver.execute_script(
        "const img = document.getElementById('examples-grid'); const r = img.getBoundingClientRect();"
        "return [[img.naturalWidth, img.naturalHeight], [r.width, r.height]];"
    )
    assert shown[0] <= 980 and abs(shown[1] / shown[0] - natural[1] / natural[0]) < 0.02
    # Every exposed member has a thumbnail, drawn at its natural 56 px.
    thumbs = driver.execute_script(
        "return [...document.querySelectorAll('#exposed-records img')].map("
        "img => [img.complete && img.naturalWidth, img.getBoundingClientRect().width]);"
    )
    assert thumbs == [[56, 56]] * len(result.privacy.exposed_records)
    assert "Compute used" in driver.find_element(By.ID, "compute-used").text

    flags = driver.find_element(By.CSS_SELECTOR, "ul.checks").text
    assert "RESOLVED" in flags and "UNRESOLVED" in flags and "robustness likely overestimated" in flags

    severe = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    assert severe == []


def test_report_without_examples_in_chromium(driver: Any, tmp_path: Path) -> None:
    page = write_html(make_audit_result(), tmp_path / "report.html")  # no adversarial.npz beside it
    driver.get(page.as_uri())
    assert driver.execute_script("return document.getElementById('examples-grid');") is None
    loaded = driver.execute_script(
        "const img = document.getElementById('robustness-plot'); return img.complete && img.naturalWidth > 0;"
    )
    assert loaded
