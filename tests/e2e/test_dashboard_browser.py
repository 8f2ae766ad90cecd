"""The dashboard in a real browser: Debian's Chromium, headless, driven by Selenium, logs
into the admin of a mirror process after known pulls, reads the hit rate and the bandwidth
saved, prefetches an image with the Prefetch image form and watches the job complete.
Screenshots go to test-artifacts/."""

from __future__ import annotations

from collections.abc import Iterator
import shutil

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from registry.jobs.gc import format_bytes
from tests.support.dashboard import DashboardApi, artifacts_dir, create_staff, pull_with_requests, wait_for
from tests.support.images import push_image, push_index
from tests.support.mirror import MirrorProcess

KB = 1024
PASSWORD = "dashboard-browser-password"


@pytest.fixture(scope="module")
def mirror(upstream, tmp_path_factory) -> Iterator[MirrorProcess]:
    process = MirrorProcess(
        tmp_path_factory.mktemp("dashboard-browser") / "data",
        upstream.url,
        username=upstream.username,
        password=upstream.password,
        MIRROR_STATS_FLUSH_INTERVAL="1",
        MIRROR_TAG_TTL="3600",
    ).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    """Debian's chromium and chromedriver (`make test` installs them): missing is a failure."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, "Debian's chromium and chromium-driver must be installed (make test-tools)"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1440,2600",
    ):
        options.add_argument(argument)
    session = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    session.set_page_load_timeout(30)
    yield session
    session.quit()


def test_an_admin_sees_the_figures_and_prefetches_from_the_dashboard(mirror, browser, upstream):
    image = push_image(upstream, "library/browsed", "1", layer_sizes=[400 * KB, 100 * KB], seed=7401)
    wanted = push_index(upstream, "library/release", "2", platforms=[("linux", "amd64"), ("linux", "arm64")], seed=7402)
    api = DashboardApi(mirror, create_staff(mirror, "admin", PASSWORD))
    pull_with_requests(mirror, image)  # cold
    pull_with_requests(mirror, image)  # warm
    saved = len(image.manifest) + image.config.size + sum(layer.size for layer in image.layers)
    day = wait_for(api.day, lambda figures: figures["requests"] >= 8)
    assert (day["hit_rate"], day["bandwidth_saved"]) == (0.5, saved)

    browser.get(f"{mirror.url}/admin/")
    assert "/admin/login/" in browser.current_url, "the dashboard wants a login"
    browser.find_element(By.NAME, "username").send_keys("admin")
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    WebDriverWait(browser, 20).until(expected_conditions.presence_of_element_located((By.ID, "hit-rate-24h")))
    assert browser.title.startswith("Dashboard")
    assert browser.find_element(By.CSS_SELECTOR, "#hit-rate-24h .dash-figure").text == "50.0%"
    assert browser.find_element(By.CSS_SELECTOR, "#saved-24h .dash-figure").text == format_bytes(saved)
    assert browser.find_element(By.CSS_SELECTOR, "#account .dash-username").text == upstream.username
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg.chart")) == 4
    assert "library/browsed" in browser.find_element(By.ID, "top-saved").text
    browser.save_screenshot(str(artifacts_dir() / "dashboard-after-pulls.png"))

    browser.find_element(By.ID, "prefetch-image").click()
    browser.find_element(By.NAME, "image").send_keys("library/release:2")
    browser.find_element(By.CSS_SELECTOR, "input[name=platform_choices][value='linux/arm64']").click()
    browser.find_element(By.NAME, "_save").click()
    panel = (By.CSS_SELECTOR, "#job-progress [data-job-url]")
    WebDriverWait(browser, 20).until(expected_conditions.presence_of_element_located(panel))
    # The page follows the job through the API, and shows it as it ended once it has.
    WebDriverWait(browser, 90, ignored_exceptions=[StaleElementReferenceException]).until(
        lambda _: browser.find_element(*panel).get_attribute("data-finished") == "true"
    )
    progress = browser.find_element(*panel)
    assert progress.get_attribute("data-status") == "succeeded", progress.text
    assert "2/2 blobs" in progress.text
    browser.save_screenshot(str(artifacts_dir() / "dashboard-prefetch-job.png"))
    stored = mirror.stored_blobs()
    assert all(blob.digest in stored for blob in wanted.child("arm64").blobs)
    assert not any(blob.digest in stored for blob in wanted.child("amd64").layers)

    browser.get(f"{mirror.url}/admin/")
    row = browser.find_element(By.CSS_SELECTOR, "#prefetch-jobs [data-job-url]")
    assert (
        row.get_attribute("data-status") == "succeeded"
        and "library/release:2" in browser.find_element(By.ID, "prefetch-jobs").text
    )
    browser.save_screenshot(str(artifacts_dir() / "dashboard.png"))
