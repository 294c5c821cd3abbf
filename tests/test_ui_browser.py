"""The web UI in a real headless Chromium (Selenium) against a real server holding runs logged
by the mlflow client. A screenshot of each page goes to tests/output/screenshots/.

Skipped as a whole, with one line saying why, when the machine has no Chromium/chromedriver
(`.ci/run` installs them)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from runledger.ui import browser

_MISSING = browser.unavailable()
if _MISSING:
    pytest.skip(f"UI browser tests skipped: {_MISSING}", allow_module_level=True)

import mlflow  # noqa: E402
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

SHOTS = Path(__file__).resolve().parent / "output" / "screenshots"
RUNS = 12


@pytest.fixture(scope="module")
def logged(server) -> dict[str, Any]:
    """An experiment of RUNS finished runs (params lr, batch; metrics loss, acc, lr_now over 300
    steps), a running one, and a rejected param change on the first run."""
    mlflow.set_tracking_uri(server.url)
    client = mlflow.MlflowClient()
    exp = client.create_experiment(f"ui-demo-{uuid.uuid4().hex[:6]}")
    runs = []
    for i in range(RUNS):
        run = client.create_run(exp, run_name=f"trial-{i:02d}")
        rid = run.info.run_id
        acc = 0.5 + i * 0.03
        metrics = []
        for s in range(300):
            metrics += [Metric("loss", 2.0 / (1 + s * (i + 1) / 50), 1_700_000_000_000 + s * 1000, s),
                        Metric("acc", acc * (1 - 0.5 ** (1 + s / 30)), 1_700_000_000_000 + s * 1000, s)]
        metrics.append(Metric("spiky", 0.0, 1_700_000_000_000, 0))
        client.log_batch(rid, metrics=metrics, params=[Param("lr", str(0.001 * (i + 1))), Param("batch", str(32 * (1 + i % 3)))],
                         tags=[RunTag("team", "vision")])
        if i == 3:
            client.log_inputs(rid, datasets=[DatasetInput(
                Dataset(name="mnist-train", digest="abc123", source_type="local", source='{"uri": "/data/mnist"}'),
                tags=[InputTag("mlflow.data.context", "training")])])
        client.set_terminated(rid, "FINISHED")
        runs.append(rid)
    with pytest.raises(MlflowException):
        client.log_param(runs[0], "lr", "999")   # params are immutable: rejected, and audited
    live = client.create_run(exp, run_name="live-run")
    client.log_metric(live.info.run_id, "live_metric", 1.0, step=0)
    return {"experiment_id": exp, "runs": runs, "live": live.info.run_id, "client": client, "url": server.url}


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    d = browser.start_browser()
    yield d
    d.quit()


def wait(driver: Any, condition: Callable[[Any], Any], timeout: float = 20) -> Any:
    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(condition)


def rows(driver: Any) -> list[Any]:
    return driver.find_elements(By.CSS_SELECTOR, "#run-table tbody tr")


def column(driver: Any, header: str) -> list[str]:
    """The texts of one column, read in one script (the table is redrawn while tests wait)."""
    found: list[str] | None = driver.execute_script("""
        const heads = [...document.querySelectorAll('#run-table thead th')].map((h) => h.textContent);
        const i = heads.indexOf(arguments[0]);
        if (i < 0) return null;
        return [...document.querySelectorAll('#run-table tbody tr')].map((r) => r.children[i].textContent);""", header)
    return found or []


def test_the_start_page_lists_experiments_with_their_run_counts(driver, logged) -> None:
    driver.get(logged["url"] + "/")
    link = wait(driver, lambda d: d.find_elements(By.LINK_TEXT, logged["client"].get_experiment(logged["experiment_id"]).name))
    row = link[0].find_element(By.XPATH, "./ancestor::tr")
    assert row.find_elements(By.TAG_NAME, "td")[2].text == str(RUNS + 1)
    browser.screenshot(driver, SHOTS, "experiments")


def test_the_run_table_lists_the_runs_and_sorts_by_a_metric_column(driver, logged) -> None:
    driver.get(f"{logged['url']}/experiments/{logged['experiment_id']}")
    wait(driver, lambda d: len(rows(d)) == RUNS + 1)
    names = column(driver, "Run")
    assert set(names) == {f"trial-{i:02d}" for i in range(RUNS)} | {"live-run"}
    driver.find_element(By.CSS_SELECTOR, "th[data-sort='metric:acc']").click()      # highest first
    wait(driver, lambda d: column(d, "Run")[0] == f"trial-{RUNS - 1:02d}")
    values = column(driver, "acc")
    assert values[-1] == ""   # the live run has no acc: missing values sort last
    accs = [float(v) for v in values[:-1]]
    assert accs == sorted(accs, reverse=True)
    driver.find_element(By.CSS_SELECTOR, "th[data-sort='metric:acc']").click()      # then lowest first
    wait(driver, lambda d: column(d, "Run")[0] == "trial-00")
    values = column(driver, "acc")
    assert values[-1] == ""
    accs = [float(v) for v in values[:-1]]
    assert accs == sorted(accs)
    driver.find_element(By.CSS_SELECTOR, "th[data-sort='name']").click()
    wait(driver, lambda d: column(d, "Run") == sorted(names))
    browser.screenshot(driver, SHOTS, "run-table")


def test_the_filter_narrows_the_table_and_a_bad_filter_shows_the_api_message(driver, logged) -> None:
    driver.get(f"{logged['url']}/experiments/{logged['experiment_id']}")
    wait(driver, lambda d: len(rows(d)) == RUNS + 1)
    box = driver.find_element(By.ID, "run-filter")
    box.send_keys("metrics.acc > 0.75 and params.batch = '32'\n")
    expected = {f"trial-{i:02d}" for i in range(RUNS) if 0.5 + i * 0.03 > 0.751 and i % 3 == 0}
    wait(driver, lambda d: set(column(d, "Run")) == expected)
    assert driver.find_element(By.ID, "run-count").text.endswith(f"of {len(expected)} runs")
    box.clear()
    box.send_keys("metrics.acc >>> 1\n")
    error = wait(driver, lambda d: d.find_element(By.ID, "filter-error").text)
    assert "acc" in error or "Invalid" in error or "filter" in error.lower()
    assert "INVALID_PARAMETER_VALUE" in error
    browser.screenshot(driver, SHOTS, "run-table-filter-error")


def _canvas_has_ink(driver: Any, canvas: Any) -> bool:
    """Whether the canvas has pixels in a series colour (not only grid grey and white)."""
    return bool(driver.execute_script("""
        const c = arguments[0], d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        for (let i = 0; i < d.length; i += 4) {
          const r = d[i], g = d[i + 1], b = d[i + 2], a = d[i + 3];
          if (a > 200 && Math.max(r, g, b) - Math.min(r, g, b) > 60) return true;
        }
        return false;""", canvas))


def test_the_run_page_draws_a_canvas_per_metric_key(driver, logged) -> None:
    driver.get(f"{logged['url']}/runs/{logged['runs'][3]}")
    wait(driver, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
    charts = driver.find_elements(By.CSS_SELECTOR, "#charts .chart")
    assert [c.get_attribute("data-key") for c in charts] == ["acc", "loss", "spiky"]
    for chart in charts:
        canvases = chart.find_elements(By.TAG_NAME, "canvas")
        assert len(canvases) == 1 and _canvas_has_ink(driver, canvases[0])
    assert "300 points" in charts[0].find_element(By.CLASS_NAME, "meta").text
    params = driver.find_element(By.ID, "params").text
    assert "lr" in params and "0.004" in params and "batch" in params
    assert "team" in driver.find_element(By.ID, "tags").text
    datasets = driver.find_element(By.ID, "datasets").text
    assert "mnist-train" in datasets and "abc123" in datasets and "training" in datasets
    browser.screenshot(driver, SHOTS, "run")


def test_zooming_a_chart_refetches_that_range(driver, logged) -> None:
    driver.get(f"{logged['url']}/runs/{logged['runs'][3]}")
    wait(driver, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
    from selenium.webdriver.common.action_chains import ActionChains
    canvas = driver.find_element(By.CSS_SELECTOR, ".chart[data-key='loss'] canvas")
    width = canvas.size["width"]
    ActionChains(driver).move_to_element_with_offset(canvas, -width // 4, 0).click_and_hold() \
        .move_by_offset(width // 6, 0).release().perform()
    meta = driver.find_element(By.CSS_SELECTOR, ".chart[data-key='loss'] .meta")
    wait(driver, lambda d: "zoomed" in meta.text)
    assert "all drawn" in meta.text  # a narrow range fits in the buckets: raw points
    assert int(meta.text.split(" points")[0].replace(",", "")) < 300


def test_the_audit_timeline_lists_the_rejected_param_change_with_actor_and_reason(driver, logged) -> None:
    driver.get(f"{logged['url']}/runs/{logged['runs'][0]}")
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#audit tbody tr.rejected"))
    rejected = driver.find_element(By.CSS_SELECTOR, "#audit tbody tr.rejected")
    text = rejected.text
    assert "ParamsLogged" in text and "rejected" in text and "lr" in text
    assert rejected.find_element(By.CLASS_NAME, "reason").text.startswith("INVALID_PARAMETER_VALUE")
    cells = rejected.find_elements(By.TAG_NAME, "td")
    assert cells[3].text  # the actor (the mlflow client's user)
    browser.screenshot(driver, SHOTS, "run-audit")


def test_the_as_of_slider_shows_the_run_before_its_params_were_logged(driver, logged) -> None:
    driver.get(f"{logged['url']}/runs/{logged['runs'][0]}")
    slider = wait(driver, lambda d: d.find_elements(By.ID, "asof-slider"))[0]
    wait(driver, lambda d: "lr" in d.find_element(By.ID, "asof-view").text)   # now: params present
    driver.execute_script("arguments[0].value = 0; arguments[0].dispatchEvent(new Event('input'));", slider)
    wait(driver, lambda d: "No params." in d.find_element(By.ID, "asof-view").text)
    assert "RunCreated" in driver.find_element(By.ID, "asof-label").text or "1 of" in driver.find_element(By.ID, "asof-label").text


def test_a_running_run_page_follows_new_points_from_the_tail_stream(driver, logged) -> None:
    driver.get(f"{logged['url']}/runs/{logged['live']}")
    wait(driver, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
    assert driver.find_element(By.ID, "live").text.strip() == "● live"
    meta = driver.find_element(By.CSS_SELECTOR, ".chart[data-key='live_metric'] .meta")
    assert meta.text.startswith("1 points")
    logged["client"].log_batch(logged["live"], metrics=[Metric("live_metric", float(s), 1_700_000_000_000 + s, s)
                                                        for s in range(1, 50)])
    wait(driver, lambda d: meta.text.startswith("50 points"))
    logged["client"].log_metric(logged["live"], "new_key", 3.0, step=1)   # a key the page had no chart for
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".chart[data-key='new_key'] canvas"))


def test_compare_overlays_the_selected_runs_and_marks_the_params_that_differ(driver, logged) -> None:
    driver.get(f"{logged['url']}/experiments/{logged['experiment_id']}")
    wait(driver, lambda d: len(rows(d)) == RUNS + 1)
    for rid in logged["runs"][:3]:
        driver.find_element(By.CSS_SELECTOR, f"input[data-run='{rid}']").click()
    driver.find_element(By.ID, "compare-selected").click()
    wait(driver, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
    assert {c.get_attribute("data-key") for c in driver.find_elements(By.CSS_SELECTOR, "#charts .chart")} == {"acc", "loss", "spiky"}
    lr = driver.find_element(By.CSS_SELECTOR, "#param-diff tr[data-key='lr']")
    assert "diff" in lr.get_attribute("class")
    canvas = driver.find_element(By.CSS_SELECTOR, ".chart[data-key='loss'] canvas")
    assert _canvas_has_ink(driver, canvas)
    browser.screenshot(driver, SHOTS, "compare")


def test_the_sql_console_shows_a_result_charts_it_and_shows_a_bad_querys_error(driver, logged) -> None:
    driver.get(f"{logged['url']}/sql")
    box = wait(driver, lambda d: d.find_element(By.ID, "sql-query"))
    box.clear()
    box.send_keys("SELECT p.value AS lr, m.value AS acc FROM params p JOIN latest_metrics m USING (run_id) "
                  f"WHERE p.key = 'lr' AND m.key = 'acc' AND p.run_id IN ({', '.join(repr(r) for r in logged['runs'])}) "
                  "ORDER BY acc")
    driver.find_element(By.ID, "sql-run").click()
    wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#sql-table tbody tr")) == RUNS)
    assert [h.text for h in driver.find_elements(By.CSS_SELECTOR, "#sql-table thead th")] == ["lr", "acc"]
    driver.find_element(By.ID, "chart-line").click()
    canvas = wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#sql-chart canvas"))[0]
    assert _canvas_has_ink(driver, canvas)
    browser.screenshot(driver, SHOTS, "sql")
    driver.find_element(By.ID, "chart-bar").click()
    bars = wait(driver, lambda d: [c for c in d.find_elements(By.CSS_SELECTOR, "#sql-chart canvas") if c != canvas])[0]
    assert _canvas_has_ink(driver, bars)
    box.clear()
    box.send_keys("SELECT nope FROM runs")
    driver.find_element(By.ID, "sql-run").click()
    error = wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#sql-status .error"))[0]
    assert "nope" in error.text


def test_an_unknown_run_shows_the_api_message(driver, logged) -> None:
    driver.get(f"{logged['url']}/runs/does-not-exist")
    error = wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#app .error"))[0]
    assert "does-not-exist" in error.text and "RESOURCE_DOES_NOT_EXIST" in error.text
    time.sleep(0)  # nothing else to wait for
