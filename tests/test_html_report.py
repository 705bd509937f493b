"""report.html: built from a real (tiny) run with a baseline, ratings and a payload in model
text, opened from disk in headless Chromium: no console errors, every plot rendered, the
numbers are the run's own, the example table searches and filters; the sweep and the
comparison pages likewise."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from browser import chromium, console_errors
from helpers import tiny_run_config

import tunelab
from tunelab.api import task_of
from tunelab.cli import main
from tunelab.human import RatingStore

PAYLOAD = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">'
DOCS = Path(__file__).parent.parent / "docs" / "results"


@pytest.fixture(scope="module")
def run_dir(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = tiny_run_config(tiny_llama, tmp_path_factory.mktemp("runs"), max_steps=6,
                             eval_every=2)
    result = tunelab.train(config)
    assert (result.run_dir / "report.html").is_file()  # written by every run
    folder = result.run_dir
    tunelab.evaluate_task(task_of(str(folder)), model=str(tiny_llama),
                     out_dir=folder / "eval" / "base-0-shot")
    tunelab.robustness(str(folder), "typo,uppercase", adapters=[str(folder)],
                             baselines=["zero"], severities=[0.2], out_dir=folder / "robustness")
    predictions = folder / "eval" / "fine-tuned" / "predictions.jsonl"
    rows = [json.loads(line) for line in predictions.read_text().splitlines()]
    rows[0]["prediction"] = PAYLOAD  # model text with markup in it
    predictions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    store = RatingStore(folder / "ratings.sqlite")
    for rater, shift in (("ann", 0), ("bob", 1)):
        for i, row in enumerate(rows):
            key = str(row.get("origin") or row["index"])
            store.add_score(rater, key, "fine-tuned", "fluency", 1 + (i + shift) % 5)
            store.add_score(rater, key, "base 0-shot", "fluency", 1 + (i * 2 + shift) % 5)
    return folder


def open_page(path: Path) -> Any:
    driver = chromium()
    driver.get(path.resolve().as_uri())
    return driver


def images_rendered(driver: Any) -> list[list[Any]]:
    return driver.execute_script(
        "return Array.from(document.images).map(i => [i.alt, i.complete && i.naturalWidth > 0])")


def test_run_report_opens_offline_with_every_plot_and_the_runs_numbers(run_dir: Path,
                                                                       capsys) -> None:
    from selenium.webdriver.common.by import By
    assert main(["report", str(run_dir)]) == 0
    assert str(run_dir / "report.html") in capsys.readouterr().out
    html = (run_dir / "report.html").read_text()
    assert "http://" not in html and "https://" not in html  # nothing to fetch
    driver = open_page(run_dir / "report.html")
    try:
        titles = [h.text for h in driver.find_elements(By.TAG_NAME, "h2")]
        assert titles == ["Setup", "Data check", "Training", "Baselines vs fine-tuned",
                          "Confusion matrix",
                          "Robustness", "Error analysis: base 0-shot vs fine-tuned",
                          "Human ratings", "Examples"]
        robust = json.loads((run_dir / "robustness" / "robustness.json").read_text())
        table = driver.find_element(By.CSS_SELECTOR, "#robustness table")
        assert len(table.find_elements(By.CSS_SELECTOR, "tbody tr")) == len(robust["rows"]) == 4
        rendered = images_rendered(driver)
        assert len(rendered) >= 6 and all(ok for _, ok in rendered), rendered
        alts = [alt for alt, _ in rendered]
        assert "training and validation loss" in alts and "learning rate schedule" in alts
        assert sum("base 0-shot" == a or "fine-tuned" == a for a in alts) == 2  # confusions
        # the baselines table holds the evaluation's own numbers
        metrics = json.loads((run_dir / "eval" / "fine-tuned" / "metrics.json").read_text())
        table = driver.find_element(By.CSS_SELECTOR, "#baselines table").text
        low, high = metrics["ci"]["accuracy"]
        assert f"{metrics['scores']['accuracy']:.2f} [{low:.2f}, {high:.2f}]" in table
        log = [json.loads(x) for x in (run_dir / "train_log.jsonl").read_text().splitlines()]
        best = min(r["val_loss"] for r in log if "val_loss" in r)
        assert f"{best:,.4g}" in driver.find_element(By.CSS_SELECTOR, "#setup").text
        ratings = driver.find_element(By.CSS_SELECTOR, "#ratings").text
        assert "Krippendorff" in ratings and "ann" not in ratings
        # the payload is text; nothing ran
        assert driver.execute_script("return typeof window.__xss") == "undefined"
        examples = driver.find_element(By.CSS_SELECTOR, "table.examples")
        assert PAYLOAD in examples.text
        # search and filter
        shown = driver.find_element(By.CSS_SELECTOR, "#examples .shown")
        total = len(examples.find_elements(By.CSS_SELECTOR, "tbody tr"))
        assert shown.text == f"{total} of {total} items"
        driver.find_element(By.CSS_SELECTOR, "#examples input.search").send_keys("window.__xss")
        assert shown.text == f"1 of {total} items"
        driver.find_element(By.CSS_SELECTOR, "#examples input.search").clear()
        driver.execute_script("arguments[0].dispatchEvent(new Event('input'))",
                              driver.find_element(By.CSS_SELECTOR, "#examples input.search"))
        options = [o.get_attribute("value") for o in
                   driver.find_elements(By.CSS_SELECTOR, "#examples select.tag option")][1:]
        assert {"still right", "still wrong", "fixed", "broken"} & set(options)
        from selenium.webdriver.support.ui import Select
        Select(driver.find_element(By.CSS_SELECTOR, "#examples select.tag")).select_by_value(
            options[0])
        visible = [r for r in examples.find_elements(By.CSS_SELECTOR, "tbody tr")
                   if r.is_displayed()]
        assert visible and all(options[0] in r.get_attribute("data-tags").split("|")
                               for r in visible)
        assert shown.text == f"{len(visible)} of {total} items"
        assert console_errors(driver) == []
    finally:
        driver.quit()


def test_sweep_report_plots_score_against_params_memory_and_time(tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    shutil.copy(DOCS / "sweep.json", tmp_path / "sweep.json")
    path = tunelab.build_report(tmp_path)
    rows = json.loads((tmp_path / "sweep.json").read_text())["rows"]
    driver = open_page(path)
    try:
        rendered = images_rendered(driver)
        assert [alt for alt, _ in rendered] == [
            "accuracy vs trainable parameters (log)", "accuracy vs peak memory (MiB)",
            "accuracy vs training time (s)"] and all(ok for _, ok in rendered)
        body = driver.find_elements(By.CSS_SELECTOR, "table tbody tr")
        assert [r.find_element(By.TAG_NAME, "td").text for r in body] == [r["method"] for r in rows]
        assert console_errors(driver) == []
    finally:
        driver.quit()


def test_compare_html_page(run_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "compare.html"
    assert main(["compare", str(run_dir / "eval" / "base-0-shot"), str(run_dir),
                 "--html", str(out)]) == 0
    capsys.readouterr()
    driver = open_page(out)
    try:
        from selenium.webdriver.common.by import By
        headline = driver.find_element(By.CSS_SELECTOR, "section p").text
        assert "base 0-shot" in headline and "fine-tuned" in headline
        assert all(ok for _, ok in images_rendered(driver))
        assert console_errors(driver) == []
    finally:
        driver.quit()
    assert main(["compare", str(run_dir / "eval" / "base-0-shot"), str(run_dir),
                 "--html", str(tmp_path / "missing" / "c.html")]) == 2
    assert "--html" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert "no such directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "nothing to report" in capsys.readouterr().err
