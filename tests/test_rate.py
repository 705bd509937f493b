"""`tunelab rate`: the rating page in headless Chromium (keys and clicks, reload and resume,
two raters at once, kill -9 of the server, an XSS payload in model text), and its one-line
errors (port in use, no such directory, bad options)."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from browser import RateServer, chromium, console_errors

from tunelab.cli import main
from tunelab.human import RatingStore
from tunelab.human.session import open_session
from tunelab.runs import System

PAYLOAD = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2"><b id="bold">b</b>'


@pytest.fixture(scope="module")
def rated(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two systems' generations of the 8 review test items (the tiny model; a word added to
    each output tells the two apart), one of them carrying an HTML/script payload in its
    output and the item's input."""
    from eval_helpers import REVIEWS

    from tunelab.config import EvalConfig, GenerationConfig, ModelConfig, TaskConfig
    from tunelab.eval.datasets import load_task_data
    from tunelab.eval.output_types import Framing
    from tunelab.eval.runner import evaluate_records, write_result
    from tunelab.models import load_model

    task = TaskConfig(name="reviews", data=REVIEWS, output_type="generate",
                      eval=EvalConfig(metrics=["rouge"],
                                      generation=GenerationConfig(max_new_tokens=6)))
    lm = load_model(ModelConfig(name=str(tiny_llama)))
    data = load_task_data(task)
    folder = tmp_path_factory.mktemp("rated")
    for system, shots in ((System.base(0), 0), (System.tuned(), 2)):
        result = evaluate_records(lm, task, data.split("test"), shots, data.split("train"),
                                  system, Framing.of(task, data))
        word = "omega" if shots else "alpha"  # the tiny model's outputs tell apart by it
        for row in result.predictions:
            row["prediction"] = f"{word} {row['prediction']}"
        if system.fine_tuned:
            result.predictions[0]["prediction"] = "omega " + PAYLOAD
        result.predictions[0]["input"] = "input " + PAYLOAD
        write_result(result, folder / system.slug)
    return folder


@pytest.fixture
def copy_of(tmp_path: Path):
    def make(source: Path) -> Path:
        target = tmp_path / source.name
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("ratings.sqlite*"))
        return target
    return make


@pytest.fixture
def browsers():
    opened: list[Any] = []

    def open_one() -> Any:
        opened.append(chromium())
        return opened[-1]
    yield open_one
    for driver in opened:
        driver.quit()


def by_id(driver: Any, name: str) -> Any:
    from selenium.webdriver.common.by import By
    return driver.find_element(By.ID, name)


def keys(driver: Any, text: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    ActionChains(driver).send_keys(text).perform()


def wait_for(driver: Any, predicate: Any, timeout: float = 20) -> None:
    from selenium.webdriver.support.ui import WebDriverWait
    WebDriverWait(driver, timeout).until(lambda d: predicate(d))


def item_index(driver: Any) -> int:
    found = re.search(r"/rate/[^/]+/(\d+)$", driver.current_url)
    assert found, driver.current_url
    return int(found.group(1))


def start_as(driver: Any, server: RateServer, rater: str) -> None:
    driver.get(server.url + "/")
    field = by_id(driver, "rater")
    field.clear()
    field.send_keys(rater)
    by_id(driver, "go").click()
    wait_for(driver, lambda d: "/rate/" in d.current_url)


def submit_and_wait(driver: Any, action: str) -> None:
    before = driver.current_url
    keys(driver, action)
    wait_for(driver, lambda d: d.current_url != before or "/rate/" not in d.current_url)


def shown(driver: Any) -> dict[str, str]:
    return {slot: by_id(driver, f"text-{slot}").text for slot in "AB"}


def system_of(session: Any, n: int, text: str) -> str:
    """Which system wrote the text shown in a slot (read off the page, not the session)."""
    matches = [s for s, out in session.items[n].outputs.items() if " ".join(out.split()) == " ".join(text.split())]
    assert len(matches) == 1, (text, session.items[n].outputs)
    return matches[0]


def test_rating_by_keys_and_clicks_reload_resume_skip_and_flag(rated: Path, copy_of,
                                                              browsers) -> None:
    folder = copy_of(rated)
    server = RateServer(folder, "--criteria", "fluency,relevance", "--pairwise",
                        "--systems", "base,fine-tuned")
    try:
        session = open_session(folder, ["base", "fine-tuned"], ["fluency", "relevance"],
                               pairwise=True)
        total = len(session.items)
        driver = browsers()
        start_as(driver, server, "ann")
        assert by_id(driver, "progress").text.startswith(f"0 of {total} done")
        page = driver.page_source
        assert "fine-tuned" not in page and "base 0-shot" not in page  # blind
        n1, texts1 = item_index(driver), shown(driver)

        # item 1 by keys: rows are A fluency, A relevance, B fluency, B relevance
        keys(driver, "5432")
        keys(driver, "b")
        keys(driver, "n")
        keys(driver, "keys note")
        from selenium.webdriver.common.keys import Keys
        keys(driver, Keys.ESCAPE)
        submit_and_wait(driver, Keys.ENTER)
        assert by_id(driver, "progress").text.startswith(f"1 of {total} done")
        assert by_id(driver, "bar").value_of_css_property("width") != "0px"

        # item 2 by clicks
        n2, texts2 = item_index(driver), shown(driver)
        from selenium.webdriver.common.by import By
        for field, value in (("s-A-fluency", 1), ("s-A-relevance", 2), ("s-B-fluency", 4),
                             ("s-B-relevance", 5)):
            driver.find_element(By.CSS_SELECTOR, f'input[name="{field}"][value="{value}"]').click()
        driver.find_element(By.CSS_SELECTOR, 'input[name="preference"][value="tie"]').click()
        before = driver.current_url
        by_id(driver, "submit").click()
        wait_for(driver, lambda d: d.current_url != before)

        # incomplete: Enter with one score missing is refused and names what is missing
        n3 = item_index(driver)
        keys(driver, "333")
        keys(driver, Keys.ENTER)
        wait_for(driver, lambda d: d.find_elements(By.ID, "error"))
        assert "B relevance" in by_id(driver, "error").text and item_index(driver) == n3
        assert driver.find_element(By.CSS_SELECTOR,
                                   'input[name="s-A-fluency"][value="3"]').is_selected()

        # item 3 skipped (s), item 4 flagged with a note (n ... Esc f)
        submit_and_wait(driver, "s")
        n4 = item_index(driver)
        keys(driver, "n")
        keys(driver, "garbled input")
        keys(driver, Keys.ESCAPE)
        submit_and_wait(driver, "f")

        # reload: the same item, the same (blind) order
        n5, texts5 = item_index(driver), shown(driver)
        driver.refresh()
        assert item_index(driver) == n5 and shown(driver) == texts5
        assert by_id(driver, "progress").text.startswith(f"4 of {total} done")

        # a new browser resumes where ann left off; the start page lists her progress
        other = browsers()
        other.get(server.url + "/")
        assert f"ann 4 / {total}" in other.find_element(By.CSS_SELECTOR, "table.raters").text
        start_as(other, server, "ann")
        assert item_index(other) == n5 and shown(other) == texts5
        # previous (p) shows the flagged item again, marked and with its note
        keys(other, "p")
        wait_for(other, lambda d: item_index(d) == n4)
        assert "flagged" in by_id(other, "progress").text
        assert by_id(other, "note").get_attribute("value") == "garbled input"
        # the one error logged is the refused incomplete form (HTTP 400), as intended
        assert [e for e in console_errors(driver) if "status of 400" not in e] == []
        assert console_errors(other) == []
    finally:
        server.stop()

    store = RatingStore(folder / "ratings.sqlite")
    given = {(s.item, s.system, s.criterion): s.score for s in store.scores()}
    for n, texts, values in ((n1, texts1, (5, 4, 3, 2)), (n2, texts2, (1, 2, 4, 5))):
        key = session.items[n].key
        a, b = system_of(session, n, texts["A"]), system_of(session, n, texts["B"])
        assert (given[key, a, "fluency"], given[key, a, "relevance"],
                given[key, b, "fluency"], given[key, b, "relevance"]) == values
    assert len(given) == 8  # two items x two systems x two criteria; nothing else
    prefs = {p.item: p for p in store.preferences()}
    first = prefs[session.items[n1].key]  # B better, stored as (first, second) sorted
    better = system_of(session, n1, texts1["B"])
    assert (first.preference == 1) == (better == first.second)
    assert prefs[session.items[n2].key].preference == 0
    notes = {s.item: s.note for s in store.scores()}
    assert notes[session.items[n1].key] == "keys note"
    assert {(i, k, note) for _, i, k, note in store.marks()} == {
        (session.items[n3].key, "skip", ""), (session.items[n4].key, "flag", "garbled input")}
    # blind order differs between items (seeded per rater and item), so position is no tell
    orders = {tuple(session.order("ann", item.key)) for item in session.items}
    assert len(orders) == 2


def rate_everything(driver: Any, server: RateServer, rater: str, offset: int,
                    log: list[tuple[str, str, int]]) -> None:
    """A rater that scores each output by its word overlap with the reference shown on the
    page (shifted by `offset`), reading only the page; all by keyboard."""
    from selenium.webdriver.common.keys import Keys
    start_as(driver, server, rater)
    while "/rate/" in driver.current_url and re.search(r"/\d+$", driver.current_url):
        reference = set(by_id(driver, "reference").text.lower().split())
        digits, scores = "", {}
        for slot in "AB":
            words = set(by_id(driver, f"text-{slot}").text.lower().split())
            overlap = len(words & reference) / max(1, len(words | reference))
            value = max(1, min(5, 1 + round(4 * overlap) + offset))
            scores[slot] = value
            digits += str(value) * 2  # fluency, relevance
            log.append((rater, by_id(driver, f"text-{slot}").text, value))
        keys(driver, digits)
        keys(driver, "a" if scores["A"] > scores["B"] else "b" if scores["B"] > scores["A"] else "t")
        submit_and_wait(driver, Keys.ENTER)
    assert by_id(driver, "finished").text.startswith("All done")


def test_two_raters_at_once_then_ratings(rated: Path, copy_of, browsers, capsys) -> None:
    folder = copy_of(rated)
    server = RateServer(folder, "--criteria", "fluency,relevance", "--pairwise",
                        "--show-reference")
    logs: dict[str, list] = {"ann": [], "bob": []}
    drivers = {name: browsers() for name in logs}
    errors: list[BaseException] = []

    def run(name: str, offset: int) -> None:
        try:
            rate_everything(drivers[name], server, name, offset, logs[name])
        except BaseException as err:  # reported below, from the test's own thread
            errors.append(err)
    try:
        threads = [threading.Thread(target=run, args=("ann", 0)),
                   threading.Thread(target=run, args=("bob", 1))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
    finally:
        server.stop()
    assert not errors, errors
    session = open_session(folder, None, ["fluency", "relevance"], pairwise=True)
    store = RatingStore(folder / "ratings.sqlite")
    for name in logs:
        rows = [s for s in store.scores() if s.rater == name]
        assert len(rows) == len(session.items) * 2 * 2
        assert store.done(name) == {item.key for item in session.items}
    assert main(["ratings", str(folder), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {a["raters"] for a in out["agreement"]} == {2}
    assert all(a["kappa"] is not None for a in out["agreement"])
    assert sum(p["n"] for p in out["pairwise"]) == 2 * len(session.items)


def test_kill_9_of_the_server_loses_nothing_submitted(rated: Path, copy_of, browsers) -> None:
    from selenium.webdriver.common.keys import Keys
    folder = copy_of(rated)
    server = RateServer(folder, "--criteria", "fluency")
    driver = browsers()
    start_as(driver, server, "ann")
    submitted = []
    for _ in range(3):
        submitted.append(item_index(driver))
        keys(driver, "42")
        submit_and_wait(driver, Keys.ENTER)
    server.kill()  # mid-session: the rater is on their fourth item
    with sqlite3.connect(folder / "ratings.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    session = open_session(folder, None, ["fluency"])
    store = RatingStore(folder / "ratings.sqlite")
    assert store.done("ann") == {session.items[n].key for n in submitted}
    assert len(store.scores()) == 3 * 2
    again = RateServer(folder, "--criteria", "fluency")
    try:
        start_as(driver, again, "ann")
        assert by_id(driver, "progress").text.startswith(f"3 of {len(session.items)} done")
        assert item_index(driver) not in submitted
    finally:
        again.stop()


def test_model_text_is_shown_as_text_and_runs_nothing(rated: Path, copy_of, browsers) -> None:
    from selenium.webdriver.common.by import By
    folder = copy_of(rated)
    server = RateServer(folder, "--criteria", "fluency")
    try:
        session = open_session(folder, None, ["fluency"])
        n = next(i for i, item in enumerate(session.items) if PAYLOAD in item.input)
        driver = browsers()
        start_as(driver, server, "ann")
        driver.get(f"{server.url}/rate/ann/{n}")
        texts = shown(driver)
        assert any(PAYLOAD in " ".join(t.split()) or PAYLOAD in t for t in texts.values())
        assert PAYLOAD in by_id(driver, "input").text
        assert driver.execute_script("return typeof window.__xss") == "undefined"
        assert driver.find_elements(By.ID, "bold") == []  # no element came from model text
        scripts = driver.find_elements(By.TAG_NAME, "script")
        assert [s.get_attribute("src").rsplit("/", 1)[-1] for s in scripts] == ["rate.js"]
        assert driver.find_elements(By.CSS_SELECTOR, "main img") == []
        assert console_errors(driver) == []
    finally:
        server.stop()


def test_port_in_use_missing_directory_and_bad_options(rated: Path, copy_of, tmp_path: Path,
                                                       capsys) -> None:
    folder = copy_of(rated)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["rate", str(folder), "--port", str(port)]) == 2
        assert f"--port {port}: already in use" in capsys.readouterr().err
    cases = [
        ([str(tmp_path / "nowhere")], "no such directory"),
        ([str(folder / "base-0-shot")], "holds 0 evaluation(s)"),
        ([str(folder), "--systems", "base-0-shot,gpt"], "--systems gpt: matches none"),
        ([str(folder), "--systems", "fine-tuned"], "at least two systems"),
        ([str(folder), "--scale", "12"], "--scale 12"),
        ([str(folder), "--criteria", "wit"], "--criteria wit: no description"),
        ([str(folder), "--limit", "0"], "--limit 0"),
        ([str(folder), "--criteria-file", str(tmp_path / "none.yaml")], "unreadable"),
    ]
    for args, message in cases:
        assert main(["rate", *args, "--port", "0"]) == 2, args
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (args, err)
    shutil.copytree(folder / "base-0-shot", folder / "third")
    assert main(["rate", str(folder), "--port", "0"]) == 2  # the same system twice
    assert "scores the same system (base 0-shot) as" in capsys.readouterr().err
    metrics = json.loads((folder / "third" / "metrics.json").read_text())
    metrics["system_id"] = System.base(2).to_json()  # a third system: base 2-shot
    (folder / "third" / "metrics.json").write_text(json.dumps(metrics))
    assert main(["rate", str(folder), "--pairwise", "--port", "0"]) == 2
    assert "--pairwise: compares exactly two systems" in capsys.readouterr().err
    assert main(["rate", str(folder), "--systems", "base", "--port", "0"]) == 2
    assert "--systems base: matches base 0-shot, base 2-shot" in capsys.readouterr().err
    shutil.rmtree(folder / "third")
    RatingStore(folder / "ratings.sqlite").set_meta("scale", "7")
    assert main(["rate", str(folder), "--port", "0"]) == 2
    assert "rated on a 7-point scale" in capsys.readouterr().err


def test_page_checks_token_range_and_own_criteria(rated: Path, copy_of, tmp_path: Path) -> None:
    """The form without the server's token is refused; so are unknown items and raters;
    criteria of one's own come with their descriptions; headers forbid inline script."""
    from tunelab.api import rate
    folder = copy_of(rated)
    criteria = tmp_path / "criteria.yaml"
    criteria.write_text("faithful: Does it say only what the input supports?\n"
                        "brevity: Is it no longer than it needs to be?\n")
    server, session = rate(folder, criteria_file=criteria, port=0, scale=3)
    try:
        client = server.app.test_client()
        page = client.get("/rate/ann/0")
        assert page.status_code == 200
        assert "script-src 'self'" in page.headers["Content-Security-Policy"]
        assert "Does it say only what the input supports?" in page.text
        assert set(re.findall(r'name="s-A-([a-z]+)" value="(\d)"', page.text)) == {
            (c, v) for c in ("faithful", "brevity") for v in "123"}
        form = {f"s-{s}-{c}": "2" for s in "AB" for c in ("faithful", "brevity")}
        assert client.post("/rate/ann/0", data={**form, "action": "submit"}).status_code == 403
        token = re.search(r'name="token" value="([^"]+)"', page.text).group(1)
        wrong = client.post("/rate/ann/0", data={**form, "s-A-brevity": "4", "token": token})
        assert wrong.status_code == 400 and "A brevity" in wrong.text
        assert client.post("/rate/ann/0", data={**form, "token": token}).status_code == 302
        assert client.get(f"/rate/ann/{len(session.items)}").status_code == 404
        assert client.get("/rate/%3Cscript%3E/0").status_code == 404
        assert RatingStore(folder / "ratings.sqlite").meta("scale") == "3"
    finally:
        server.server_close()


SQUAD = Path(__file__).parent / "data" / "rated_squad"


def overlap_rater(driver: Any, server: RateServer, rater: str, noise: int,
                  screenshot: Path | None = None) -> list[dict]:
    """A scripted rater who reads each page: correctness from the answer's word overlap with
    the reference shown, relevance the same but one point off for a rambling answer (more
    than 12 words); `noise` shifts every third item by a point (two raters that mostly
    agree). Prefers the output it scored higher. Returns what it gave, by the text it saw."""
    from selenium.webdriver.common.keys import Keys
    given = []
    start_as(driver, server, rater)
    count = 0
    while re.search(r"/rate/[^/]+/\d+$", driver.current_url):
        reference = set(re.findall(r"\w+", by_id(driver, "reference").text.lower()))
        digits, totals = "", {}
        for slot in "AB":
            text = by_id(driver, f"text-{slot}").text
            words = re.findall(r"\w+", text.lower())
            shared = len(set(words) & reference)
            f1 = 2 * shared / (len(set(words)) + len(reference)) if words and reference else 0.0
            correctness = 1 + round(4 * f1)
            relevance = max(1, correctness - (len(words) > 12))
            if noise and count % 3 == 0:
                correctness = min(5, max(1, correctness + noise))
            digits += f"{correctness}{relevance}"
            totals[slot] = correctness + relevance
            given.append({"n": item_index(driver), "text": text, "correctness": correctness,
                          "relevance": relevance})
        keys(driver, digits[:3])
        if screenshot is not None and count == 1:  # the page as a rater sees it, mid-item
            driver.set_window_size(1280, 1150)
            driver.save_screenshot(str(screenshot))
        keys(driver, digits[3:])
        keys(driver, "a" if totals["A"] > totals["B"] else "b" if totals["B"] > totals["A"] else "t")
        submit_and_wait(driver, Keys.ENTER)
        count += 1
    assert by_id(driver, "finished").text.startswith("All done")
    return given


def test_rating_session_on_the_built_in_models_answers(copy_of, browsers, capsys) -> None:
    """Done means: base vs fine-tuned answers of the built-in model, rated through the page by
    two raters in Chromium, then `tunelab ratings` with agreement and the metric correlation."""
    docs = Path(os.environ["TUNELAB_DOCS"]) if os.environ.get("TUNELAB_DOCS") else None
    folder = copy_of(SQUAD)
    server = RateServer(folder, "--systems", "base,fine-tuned", "--criteria",
                        "correctness,relevance", "--pairwise", "--show-reference")
    try:
        given = {name: overlap_rater(browsers(), server, name, noise,
                                     docs / "rate.png" if docs and name == "ann" else None)
                 for name, noise in (("ann", 0), ("bob", 1))}
    finally:
        server.stop()
    session = open_session(folder, ["base", "fine-tuned"], ["correctness", "relevance"],
                           pairwise=True)
    assert len(given["ann"]) == 2 * len(session.items) == 80
    store = RatingStore(folder / "ratings.sqlite")
    stored = {(s.rater, s.item, s.system, s.criterion): s.score for s in store.scores()}
    assert len(stored) == 2 * 40 * 2 * 2
    for rater, rows in given.items():  # what the page showed is what was stored, by system
        for row in rows:
            item = session.items[row["n"]]
            wrote = [s for s, out in item.outputs.items()
                     if " ".join(out.split()) == " ".join(row["text"].split())]
            assert wrote and all(stored[rater, item.key, s, c] == row[c] for s in wrote
                                 for c in ("correctness", "relevance"))
    assert main(["ratings", str(folder), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    means = {(s["system"], s["criterion"]): s["mean"] for s in out["scores"]}
    assert means["fine-tuned", "correctness"] > means["base 0-shot", "correctness"]
    (diff,) = [d for d in out["differences"] if d["criterion"] == "correctness"]
    assert diff["reference"] == "fine-tuned" and diff["delta"] > 0 and diff["n"] == 40
    agreement = {a["criterion"]: a for a in out["agreement"]}
    assert 0.5 < agreement["correctness"]["alpha"] < 1  # noisy, mostly agreeing raters
    assert agreement["relevance"]["alpha"] == pytest.approx(1.0)  # no noise on relevance
    correlation = {(c["system"], c["criterion"], c["metric"]): c for c in out["correlations"]}
    f1 = correlation["fine-tuned", "correctness", "f1 (f1)"]
    assert f1["n"] == 40 and f1["spearman"] > 0.5  # overlap raters agree with token F1
    assert main(["ratings", str(folder)]) == 0
    printed = capsys.readouterr().out
    assert "Krippendorff alpha" in printed and "Spearman" in printed
    if docs is not None:  # TUNELAB_DOCS=docs/images: the README's pictures of this session
        (docs / "ratings.txt").write_text(printed)
        assert main(["report", str(folder)]) == 0
        driver = browsers()
        driver.get((folder / "report.html").resolve().as_uri())
        driver.set_window_size(1280, 1400)
        driver.execute_script("document.getElementById('ratings').scrollIntoView()")
        driver.save_screenshot(str(docs / "report_ratings.png"))
