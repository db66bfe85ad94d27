"""The search page in headless Chromium (Debian's chromium + chromedriver; no browser download):
upload a video through the page, find it with a query, check its thumbnail and player, and save
a screenshot."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import httpx
import pytest
from processes import free_port, one_encoder

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "tiny.yaml"
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
DEADLINE_S = 120


def wait_for(check, what: str, deadline_s: float = DEADLINE_S):
    """Poll `check()` until it returns something truthy, failing at the deadline."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception:  # not ready yet (connection refused, element missing)
            pass
        time.sleep(0.1)  # poll interval
    raise AssertionError(f"timed out after {deadline_s}s waiting for {what}")


@pytest.fixture(scope="module")
def page_url(ray_local, tmp_path_factory):
    """The Serve app (tiny random-init model, empty embedded index) on 127.0.0.1."""
    from ray import serve

    from serve.app import build_application
    from serve.schemas import AppArgs

    work = tmp_path_factory.mktemp("page")
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    args = {
        "config": str(TINY),
        "overrides": [f"index.path={work / 'index'}"],
        "staging_dir": str(work / "staging"),
        "media_dir": str(work / "media"),
        "streams_dir": str(work / "streams"),
    }
    app = build_application(AppArgs.model_validate(args), one_encoder(0.3))
    serve.run(app, name="adaclip-page", route_prefix="/")
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: httpx.get(f"{url}/healthz", timeout=5).status_code == 200, "/healthz")
    yield url
    serve.delete("adaclip-page")
    serve.shutdown()


@pytest.fixture
def browser(tmp_path):
    assert CHROMIUM and CHROMEDRIVER, "install Debian's chromium and chromium-driver (make test does)"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1100,900",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def test_upload_then_find_through_the_page(page_url, browser, synth_corpus, tmp_path):
    from selenium.webdriver.common.by import By

    row = json.loads((synth_corpus / "annotations.jsonl").read_text().splitlines()[0])
    video = synth_corpus / row["video"]
    browser.get(page_url + "/")
    assert "video search" in browser.title

    browser.find_element(By.ID, "file").send_keys(str(video))
    browser.find_element(By.ID, "title").send_keys(row["title"])
    browser.find_element(By.ID, "upload-button").click()
    status = browser.find_element(By.ID, "upload-status")
    wait_for(lambda: "indexed:" in status.text, "the upload to be indexed")
    video_id = status.get_attribute("data-id")
    assert httpx.get(f"{page_url}/videos/{video_id}", timeout=30).json()["payload"]["title"] == row["title"]

    browser.find_element(By.ID, "q").send_keys(row["captions"][0])
    browser.find_element(By.ID, "search-button").click()
    result = wait_for(
        lambda: browser.find_element(By.CSS_SELECTOR, f".result[data-id='{video_id}']"),
        "the video in the results",
    )
    thumbnail = result.find_element(By.TAG_NAME, "img")
    wait_for(
        lambda: browser.execute_script("return arguments[0].naturalWidth", thumbnail) > 0, "the thumbnail"
    )
    assert "moment" in result.text

    result.find_element(By.CSS_SELECTOR, "button.play").click()
    player = browser.find_element(By.ID, "player")
    assert player.get_attribute("src").endswith(f"videos/{video_id}/media")
    media = httpx.get(f"{page_url}/videos/{video_id}/media", timeout=30)
    assert media.status_code == 200 and media.content == video.read_bytes()

    shot = tmp_path / "search-page.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
