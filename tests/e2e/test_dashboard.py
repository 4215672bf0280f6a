"""The dashboard in a real browser (headless Chromium) against a real `serve` with API keys on:
enter the key, submit a job through the form, watch its loss curve grow, see the fitted
surface, try a prediction. Screenshots of the list and the job page are kept as artifacts."""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.support import REPO, ServiceProcess

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
KEY = "dashboard-browser-key"
EPOCHS = 300
WAIT_SECONDS = 30.0
WINDOW = (1400, 900)  # a laptop's screen

webdriver = pytest.importorskip(
    "selenium.webdriver", reason="the browser test needs selenium: pip install selenium"
)
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.remote.webelement import WebElement  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def training_csv(rows: int = 200) -> str:
    """A smooth 2-input function on scattered points: sinc of the radius, as in the notebook."""
    x = np.random.default_rng(0).uniform(-6.0, 6.0, size=(rows, 2))
    r = np.hypot(x[:, 0], x[:, 1])
    y = np.sinc(r / np.pi)  # numpy's sinc is sin(pi t)/(pi t)
    lines = ["u,v,height", *(f"{a:.5f},{b:.5f},{c:.6f}" for (a, b), c in zip(x, y, strict=True))]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    folder = tmp_path_factory.mktemp("dashboard")
    process = ServiceProcess(
        f"sqlite:///{folder / 'service.db'}",
        log_path=folder / "service.log",
        # The autograd engine: slow enough per step that the curve is seen growing.
        env={"SERVICE_API_KEYS": KEY, "SERVICE_ENGINE": "torch", "SERVICE_TORCH_THREADS": "1"},
    )
    process.start()
    yield process
    assert process.stop() == 0, process.log_tail()


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        pytest.skip(
            f"the browser test needs {CHROMIUM} and {CHROMEDRIVER}: "
            "apt-get install chromium chromium-driver"
        )
    options = Options()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        "--hide-scrollbars",
    ):
        options.add_argument(argument)
    # The given driver path means Selenium Manager never runs: nothing is downloaded.
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("SERVICE_TEST_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def screenshot(driver: WebDriver, artifacts: Path, name: str) -> None:
    """The whole page (the window grows to its height for the shot), kept as an artifact."""
    path = artifacts / name
    width, height = WINDOW
    page_height = driver.execute_script("return document.documentElement.scrollHeight")
    # The margin covers the window's own frame, which the page's height leaves out.
    driver.set_window_size(width, max(height, int(page_height) + 160))
    driver.execute_script("window.scrollTo(0, 0)")
    try:
        assert driver.save_screenshot(str(path)), path
    finally:
        driver.set_window_size(width, height)
    if os.environ.get("SERVICE_UPDATE_SCREENSHOTS") == "1":
        shutil.copyfile(path, REPO / "docs" / name)


def wait_for(driver: WebDriver, css: str, timeout: float = WAIT_SECONDS) -> WebElement:
    element: WebElement = WebDriverWait(driver, timeout).until(
        lambda d: next(iter(d.find_elements(By.CSS_SELECTOR, css)), False)
    )
    return element


def drawn_epochs(driver: WebDriver) -> int:
    """How many epochs the loss chart's training curve holds right now."""
    # Read in one script: the chart is redrawn (replaced) as epochs arrive.
    count = driver.execute_script(
        "const line = document.querySelector('#loss-chart polyline.train');"
        "return line ? Number(line.dataset.count) : 0;"
    )
    return int(count)


def paste(driver: WebDriver, element: WebElement, text: str) -> None:
    """Set a field's text at once, as a paste does (typing 200 rows key by key takes long)."""
    driver.execute_script(
        "arguments[0].value = arguments[1];"
        "arguments[0].dispatchEvent(new Event('input', {bubbles: true}));",
        element,
        text,
    )


def fill(driver: WebDriver, field_id: str, value: str) -> None:
    element = driver.find_element(By.ID, field_id)
    element.clear()
    element.send_keys(value)


def test_a_job_from_the_form_to_a_prediction(
    service: ServiceProcess, browser: WebDriver, artifacts: Path
) -> None:
    driver = browser
    driver.get(f"{service.url}/")
    # The page loads without a key; its first API call is refused and it asks for one.
    key_input = wait_for(driver, "#key-dialog[open] #key-input")
    key_input.send_keys(KEY)
    driver.find_element(By.CSS_SELECTOR, "#key-form button[type=submit]").click()
    wait_for(driver, "#jobs .empty")
    assert driver.execute_script("return sessionStorage.getItem('service.apiKey')") == KEY

    driver.find_element(By.CSS_SELECTOR, "a[href='#/new']").click()
    paste(driver, wait_for(driver, "#csv"), training_csv())
    assert "200 rows" in driver.find_element(By.ID, "csv-preview").text
    assert driver.find_element(By.ID, "target").get_attribute("value") == "height"
    fill(driver, "job_name", "browser-sinc")
    fill(driver, "layers", "32, 32")
    fill(driver, "epochs", str(EPOCHS))
    fill(driver, "batch_size", "16")
    fill(driver, "validation_fraction", "0.2")
    driver.find_element(By.ID, "submit-job").click()

    # The job page: the curve gains points while the job trains.
    WebDriverWait(driver, WAIT_SECONDS).until(lambda d: "#/jobs/" in d.current_url)
    job_id = driver.current_url.rsplit("/", 1)[1]
    WebDriverWait(driver, WAIT_SECONDS, poll_frequency=0.1).until(lambda d: drawn_epochs(d) > 0)
    first = drawn_epochs(driver)
    assert first < EPOCHS, "training ended before the page drew it twice: make it slower"
    WebDriverWait(driver, WAIT_SECONDS, poll_frequency=0.1).until(lambda d: drawn_epochs(d) > first)
    assert driver.find_elements(By.CSS_SELECTOR, "#loss-chart polyline.val")
    # Followed through the job's event stream, not by polling.
    assert driver.find_element(By.ID, "loss-chart").get_attribute("data-live") == "events"
    assert "browser-sinc" in driver.find_element(By.TAG_NAME, "h1").text
    assert "32, 32" in driver.find_element(By.ID, "settings").text

    wait_for(driver, "#summary .status-succeeded")
    WebDriverWait(driver, 5).until(lambda d: drawn_epochs(d) == EPOCHS)
    assert not driver.find_element(By.ID, "cancel").is_displayed()
    # The 2-input model's prediction surface, beside the data this tab submitted.
    wait_for(driver, ".surface[data-kind=heatmap] canvas.heatmap")
    assert len(driver.find_elements(By.CSS_SELECTOR, ".surface canvas")) == 2
    driver.find_element(By.ID, "log-scale").click()  # linear scale: redrawn, same points
    assert drawn_epochs(driver) == EPOCHS
    driver.find_element(By.ID, "log-scale").click()

    prediction_box = driver.find_element(By.ID, "predict-input")
    paste(driver, prediction_box, "0, 0\n5.5, -5.5")
    driver.find_element(By.CSS_SELECTOR, "#predict-form button[type=submit]").click()
    cells = WebDriverWait(driver, WAIT_SECONDS).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#predict-result td.prediction")
    )
    values = [float(cell.text) for cell in cells]
    assert len(values) == 2 and all(math.isfinite(v) for v in values)
    assert values[0] > values[1]  # sinc peaks at the origin
    screenshot(driver, artifacts, "job-page.png")

    # The list: the job ended, and its model is listed.
    driver.find_element(By.CSS_SELECTOR, "a[data-nav=list]").click()
    wait_for(driver, f"#jobs tr[data-job='{job_id}'][data-status=succeeded]")
    wait_for(driver, f"#models tr[data-model='{job_id}']")
    # With no job active, the list waits on the status stream rather than polling each second.
    wait_for(driver, "#jobs[data-live=events]")
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    # The one 401 is the page asking for the key; nothing else may fail.
    assert all("401" in e["message"] for e in errors), errors


def open_page(driver: WebDriver, service: ServiceProcess, route: str) -> None:
    """Load the page at a route; the key entered earlier stays in this tab's sessionStorage,
    so it is not asked for again (an open key dialog would stop every wait below)."""
    driver.get(f"{service.url}/{route}")


def test_a_one_input_model_is_drawn_as_a_line(service: ServiceProcess, browser: WebDriver) -> None:
    x = np.linspace(-3.0, 3.0, 60)
    body = {
        "name": "browser-line",
        "data": {"x": [[v] for v in x.tolist()], "y": np.tanh(x).tolist(), "feature_names": ["t"]},
        "model": {"hidden_layers": [8]},
        "training": {"epochs": 20, "batch_size": 20},
    }
    # The list, open before the job exists, shows it arrive and end without a reload.
    open_page(browser, service, "#/")
    wait_for(browser, "#jobs[data-live=events]")
    with httpx.Client(base_url=service.url, headers={"Authorization": f"Bearer {KEY}"}) as api:
        job_id = api.post("/jobs", json=body).raise_for_status().json()["id"]
    # Sooner than the idle list's slow poll (15 s): the status stream brought it.
    wait_for(browser, f"#jobs tr[data-job='{job_id}'][data-status=succeeded] a", 10).click()
    wait_for(browser, ".surface[data-kind=line] polyline.fit")
    # Submitted elsewhere, so its training data came from the service: all 60 rows.
    dots = wait_for(browser, ".surface[data-kind=line] g.dots.data")
    assert dots.get_attribute("data-count") == "60"
    axis_labels = browser.find_elements(By.CSS_SELECTOR, ".surface .axis-label")
    assert [label.text for label in axis_labels] == ["t", "prediction"]  # the feature's name
    assert drawn_epochs(browser) == 20


def test_the_cancel_button_stops_a_running_job(
    service: ServiceProcess, browser: WebDriver, artifacts: Path
) -> None:
    x = np.random.default_rng(1).uniform(-1.0, 1.0, size=(400, 2))
    body = {
        "name": "browser-cancel",
        "data": {"x": x.tolist(), "y": (x[:, :1] * x[:, 1:]).tolist()},
        "training": {"epochs": 2000, "batch_size": 4},
    }
    with httpx.Client(base_url=service.url, headers={"Authorization": f"Bearer {KEY}"}) as api:
        job_id = api.post("/jobs", json=body).raise_for_status().json()["id"]
    open_page(browser, service, "#/")
    running = f"#jobs tr[data-job='{job_id}'][data-status=running]"
    # Shown once it has trained a few epochs, so the picture has some progress in it.
    WebDriverWait(browser, WAIT_SECONDS).until(
        lambda d: d.execute_script(
            f'const row = document.querySelector("{running}");'
            "return row !== null && Number(row.dataset.epoch) >= 20;"
        )
    )
    # The list with this job training beside the ones that ended (the earlier tests' jobs).
    screenshot(browser, artifacts, "dashboard.png")
    browser.find_element(By.CSS_SELECTOR, f"{running} a").click()
    wait_for(browser, "#summary .status-running")
    browser.find_element(By.ID, "cancel").click()
    wait_for(browser, "#summary .status-cancelled")
    assert not browser.find_element(By.ID, "cancel").is_displayed()
    assert not browser.find_elements(By.CSS_SELECTOR, "#model:not([hidden])")


def test_a_sweep_page_compares_its_trials(
    service: ServiceProcess, browser: WebDriver, artifacts: Path
) -> None:
    rows = [line.split(",") for line in training_csv().splitlines()[1:]]
    rates = [0.001, 0.003, 0.01]
    body = {
        "name": "browser-sweep",
        "base": {
            "data": {
                "x": [[float(u), float(v)] for u, v, _ in rows],
                "y": [float(height) for _, _, height in rows],
                "feature_names": ["u", "v"],
            },
            "model": {"hidden_layers": [16, 16]},
            "training": {"epochs": 100, "batch_size": 16, "validation_fraction": 0.2},
        },
        "grid": {"training.learning_rate": rates, "training.seed": [0, 1]},
    }
    browser.get_log("browser")  # the earlier tests' entries: this test checks its own
    with httpx.Client(base_url=service.url, headers={"Authorization": f"Bearer {KEY}"}) as api:
        sweep_id = api.post("/sweeps", json=body).raise_for_status().json()["id"]
        # The list links the sweep, naming its best trial once one succeeded.
        open_page(browser, service, "#/")
        row = f"#sweeps tr[data-sweep='{sweep_id}'][data-status=succeeded]"
        assert "learning_rate" in wait_for(browser, f"{row} .best-params").text
        browser.find_element(By.CSS_SELECTOR, f"{row} a").click()
        wait_for(browser, "#sweep-summary .status-succeeded")
        # Every curve fetched in full: the page stopped polling.
        wait_for(browser, "#sweep-chart[data-live=ended]")
        sweep = api.get(f"/sweeps/{sweep_id}").raise_for_status().json()
    trials = {trial["id"]: trial for trial in sweep["trials"]}
    assert len(trials) == 6
    assert "browser-sweep" in browser.find_element(By.TAG_NAME, "h1").text

    # One curve per trial on the one chart, the best one marked.
    lines = browser.find_elements(By.CSS_SELECTOR, "#sweep-chart polyline[data-trial]")
    assert sorted(line.get_attribute("data-trial") for line in lines) == sorted(trials)
    assert all(int(line.get_attribute("data-count")) > 1 for line in lines)
    best = sweep["best"]["id"]
    marked = browser.find_elements(By.CSS_SELECTOR, "#sweep-chart polyline.best")
    assert [line.get_attribute("data-trial") for line in marked] == [best]
    legend = browser.find_element(By.CSS_SELECTOR, "#trial-legend li.best")
    assert legend.get_attribute("data-trial") == best and "best" in legend.text

    # The table: each trial's parameters, final losses and a link to its job page.
    table_rows = browser.find_elements(By.CSS_SELECTOR, "#trials tbody tr[data-trial]")
    assert len(table_rows) == len(trials)
    for table_row in table_rows:
        trial = trials[table_row.get_attribute("data-trial")]
        params = {
            cell.get_attribute("data-param"): cell.text
            for cell in table_row.find_elements(By.CSS_SELECTOR, "td[data-param]")
        }
        assert params == {
            "training.learning_rate": str(trial["params"]["training.learning_rate"]),
            "training.seed": str(trial["params"]["training.seed"]),
        }
        final = float(table_row.find_element(By.CSS_SELECTOR, "td.final-val").text)
        assert final == pytest.approx(trial["val_loss"], rel=1e-3)
        assert table_row.find_element(By.CSS_SELECTOR, f"a[href='#/jobs/{trial['id']}']")
        assert ("best" in (table_row.get_attribute("class") or "")) == (trial["id"] == best)
    assert not browser.find_element(By.ID, "cancel-sweep").is_displayed()
    screenshot(browser, artifacts, "sweep-page.png")
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
