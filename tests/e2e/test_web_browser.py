"""The web page in a real headless browser (the distribution's Chromium, driven by selenium
through the system chromedriver: nothing is downloaded) against a real ``hfd serve`` on the
fake engine: the page loads with no console error, the loaded-models table matches
``/api/ps``, a chat in the playground streams text, a pull from a local Hub shows progress.

Screenshots of the views are written to ``HFD_WEB_SCREENSHOTS`` (a folder) when it is set:
``HFD_WEB_SCREENSHOTS=docs/img`` refreshes the ones ``docs/web.md`` shows.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.daemon import Daemon
from support.fake_models import fake_model
from support.hub_server import HubRepo, HubServer
from support.web_daemon import CHAT, start_fake_daemon

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (hfd[dev])")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

CHROMIUM = next(
    (p for p in ("/usr/lib/chromium/chromium", shutil.which("chromium")) if p and Path(p).exists()), None
)
CHROMEDRIVER = shutil.which("chromedriver")
if CHROMIUM is None or CHROMEDRIVER is None:
    pytest.skip(
        "needs Debian's chromium and chromium-driver (scripts/setup --dev installs them)",
        allow_module_level=True,
    )

REPO = "acme/fake-bert"
WAIT = 60.0


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubServer]:
    model = fake_model(tmp_path_factory.mktemp("hub"), "bert")
    # Throttled so the pull takes a moment and the page sees it downloading.
    server = HubServer([HubRepo.from_dir(REPO, model)], rate=2048).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, hub: HubServer) -> Iterator[Daemon]:
    d = start_fake_daemon(tmp_path_factory.mktemp("web"), hub=hub)
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,860",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # The driver's path is given, so selenium-manager looks nothing up and downloads nothing.
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def errors(browser: Any) -> list[dict[str, Any]]:
    return [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def shoot(browser: Any, name: str) -> None:
    folder = os.environ.get("HFD_WEB_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(Path(folder) / f"web-{name}.png"))


def view(browser: Any, name: str) -> None:
    browser.find_element(By.CSS_SELECTOR, f'#tabs button[data-view="{name}"]').click()
    WebDriverWait(browser, WAIT).until(lambda b: b.find_element(By.ID, f"view-{name}").is_displayed())


def test_the_page_loads_and_its_tables_match_the_api(browser: Any, daemon: Daemon) -> None:
    chat = {"model": CHAT, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    assert httpx.post(daemon.http + "/v1/chat/completions", json=chat, timeout=60).status_code == 200
    browser.get(daemon.http + "/")
    ps = httpx.get(daemon.http + "/api/ps", timeout=30).json()["models"]

    def rows(b: Any) -> list[list[str]]:
        found = b.find_elements(By.CSS_SELECTOR, "#loaded-table tbody tr")
        return [[td.text for td in tr.find_elements(By.TAG_NAME, "td")] for tr in found]

    WebDriverWait(browser, WAIT).until(lambda b: len(rows(b)) == len(ps))
    shown = {r[0]: r for r in rows(browser)}
    assert set(shown) == {m["name"] for m in ps}
    for m in ps:
        assert shown[m["name"]][1:4] == [m["task"], m["engine"], m["device"] or ""]
    assert browser.find_element(By.ID, "version").text.startswith("v")
    shoot(browser, "loaded")
    for name in ("hardware", "api", "activity"):
        view(browser, name)
        shoot(browser, name)

    def charted(b: Any) -> bool:
        # Traffic while the chart samples /metrics, so it has something to draw.
        chat["max_tokens"] = 32
        httpx.post(daemon.http + "/v1/chat/completions", json=chat, timeout=60)
        return int(b.find_element(By.ID, "chart").get_attribute("data-samples") or 0) >= 4

    WebDriverWait(browser, WAIT, poll_frequency=0.5).until(charted)
    assert browser.find_elements(By.CSS_SELECTOR, "#recent-table tbody tr"), "recent requests are listed"
    shoot(browser, "activity")
    assert not errors(browser), errors(browser)


def test_a_chat_in_the_playground_streams_text(browser: Any, daemon: Daemon) -> None:
    browser.get(daemon.http + "/#playground")
    WebDriverWait(browser, WAIT).until(lambda b: b.find_elements(By.CSS_SELECTOR, "#chat-model option"))
    browser.find_element(By.ID, "chat-input").send_keys("Tell me a story")
    browser.find_element(By.CSS_SELECTOR, "#chatform button[type=submit]").click()
    done = '.msg.assistant[data-done="true"]'
    WebDriverWait(browser, WAIT).until(lambda b: b.find_elements(By.CSS_SELECTOR, done))
    reply = browser.find_element(By.CSS_SELECTOR, done)
    assert int(reply.get_attribute("data-chunks")) > 1, "the reply came in several chunks"
    assert reply.find_element(By.CLASS_NAME, "text").text.strip()
    browser.find_element(By.ID, "embed-a").send_keys("a cat sat")
    browser.find_element(By.ID, "embed-b").send_keys("a cat sat")
    browser.find_element(By.CSS_SELECTOR, "#embedform button[type=submit]").click()
    out = browser.find_element(By.ID, "embed-out")
    WebDriverWait(browser, WAIT).until(lambda b: out.text.startswith("cosine"))
    assert float(out.text.split()[-1]) == pytest.approx(1.0, abs=1e-3)  # a text is like itself
    shoot(browser, "playground")
    assert not errors(browser), errors(browser)


def test_a_pull_shows_progress(browser: Any, daemon: Daemon) -> None:
    browser.get(daemon.http + "/#store")
    WebDriverWait(browser, WAIT).until(lambda b: b.find_element(By.ID, "view-store").is_displayed())
    browser.find_element(By.ID, "pull-ref").send_keys(REPO)
    browser.find_element(By.CSS_SELECTOR, "#pullform button[type=submit]").click()
    text = browser.find_element(By.ID, "pull-text")
    WebDriverWait(browser, WAIT).until(lambda b: text.get_attribute("data-status") == "success")
    seen = text.get_attribute("data-seen").split()
    assert "downloading" in seen and seen[-1] == "success", seen
    bar = browser.find_element(By.ID, "pull-progress")
    assert bar.get_attribute("value") == bar.get_attribute("max")
    row = f'#store-table tr[data-model^="{REPO}"]'
    WebDriverWait(browser, WAIT).until(lambda b: b.find_elements(By.CSS_SELECTOR, row))
    shoot(browser, "store")
    if browser.find_elements(By.CSS_SELECTOR, row + " button"):  # the daemon serves /api/delete
        browser.find_element(By.CSS_SELECTOR, row + " button").click()
        browser.switch_to.alert.accept()
        WebDriverWait(browser, WAIT).until(lambda b: not b.find_elements(By.CSS_SELECTOR, row))
    assert not errors(browser), errors(browser)
