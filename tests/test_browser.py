"""What a person sees: optuna-dashboard in headless Chromium (Debian's ``chromium`` and
``chromium-driver``; ``.ci/run`` installs them), over studies trace_optuna wrote.

Screenshots go to ``$TRACE_OPTUNA_SCREENSHOT_DIR`` (default: the test's temporary directory).
"""

from __future__ import annotations

from collections.abc import Iterator
import contextlib
import http.server
import os
from pathlib import Path
import shutil
import threading
from typing import Any

import pytest
from test_dashboard import HUMAN_TEXT
from test_dashboard import demo_study
from test_dashboard import human_study
from test_dashboard import reply
from test_dashboard import running_dashboard
from test_dashboard import split_diff
from test_dashboard import study_id
from test_dashboard import study_names

from trace_optuna import demo
from trace_optuna import records
from trace_optuna.dashboard import HumanFeedback

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
WAIT_S = 90

pytestmark = pytest.mark.browser

webdriver = pytest.importorskip(
    "selenium.webdriver", reason="browser tests need selenium: pip install trace-optuna[test]"
)
if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
    pytest.skip(
        "browser tests need Debian's chromium and chromium-driver: "
        "apt-get install -y chromium chromium-driver",
        allow_module_level=True,
    )

from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

REBOUND = "rebound.test"  # a name the rebinding probe's browser resolves to 127.0.0.1


@contextlib.contextmanager
def serving(page: bytes) -> Iterator[str]:
    """Serve ``page`` from another local port (another origin); yield its URL."""

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (name fixed by http.server)
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()


def chromium(*extra: str) -> Any:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the console
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,2200",
        *extra,
    ):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


@pytest.fixture
def browser() -> Iterator[Any]:
    driver = chromium()
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def rebinding_browser() -> Iterator[Any]:
    """A browser in which a foreign name resolves to 127.0.0.1, as after DNS rebinding."""
    driver = chromium(f"--host-resolver-rules=MAP {REBOUND} 127.0.0.1")
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    directory = Path(os.environ.get("TRACE_OPTUNA_SCREENSHOT_DIR") or tmp_path)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def page_text(driver: Any) -> str:
    return str(driver.find_element(By.TAG_NAME, "body").text)


def wait_for_text(driver: Any, *texts: str) -> str:
    """Wait until every text is visible on the page (the dashboard renders asynchronously)."""
    WebDriverWait(driver, WAIT_S).until(lambda d: all(text in page_text(d) for text in texts))
    return page_text(driver)


def scroll_to(driver: Any, element: Any) -> None:
    """Scroll the page vertically so that ``element`` is near the top of the window."""
    driver.execute_script(
        "window.scrollTo(0, arguments[0].getBoundingClientRect().top + window.scrollY - 300);",
        element,
    )


def save(driver: Any, path: Path) -> Path:
    assert driver.save_screenshot(str(path))
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 30_000
    return path


def test_a_trial_page_shows_the_feedback_and_the_diff(
    browser: Any, screenshots: Path, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = demo_study(url, "browser", tmp_path / "artifacts")
    study.optimize(n_trials=4)
    record = study.record(2)
    assert record.changed and record.feedback and record.parent_feedback
    with running_dashboard(url) as base:
        sid = study_id(base, "browser")
        browser.get(base.printed)  # the printed URL: its token becomes a cookie
        browser.get(f"{base}/dashboard/studies/{sid}/trials?numbers=2")
        text = wait_for_text(browser, "Feedback on this candidate", record.feedback)
        assert "Feedback that drove this step" in text and record.parent_feedback in text
        assert f"Trial 2: optoprime, score {record.value:.4g}" in text
        for path, block in split_diff(record.diff, record.changed).items():
            assert f"--- {path} (parent)" in text
            for line in block.splitlines()[3:]:  # the hunk's removed and added lines
                assert line.strip() in text
        assert "simulated/feedback-follower" in text  # the LLM table
        note = browser.find_element(By.XPATH, "//*[text()='Feedback on this candidate']")
        scroll_to(browser, note)
        save(browser, screenshots / "trial-note.png")
        code = browser.find_element(By.XPATH, "//code[contains(., '(candidate)')]")
        assert code.is_displayed() and "+++ " in code.text

        # The figures trace_optuna saved into the study, on the study's page.
        browser.get(f"{base}/dashboard/studies/{sid}")
        text = wait_for_text(browser, "Score over trials: browser", "Lineage of candidates")
        assert "LLM cost: browser" in text and "best so far" in text
        figure = browser.find_element(By.XPATH, "//*[contains(text(), 'Lineage of candidates')]")
        scroll_to(browser, figure)
        save(browser, screenshots / "study-figures.png")


def test_a_person_answers_in_the_browser_form(
    browser: Any, screenshots: Path, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'human.db'}"
    study = human_study(url, "human", HumanFeedback(reply, timeout=300, poll_interval=0.1))
    errors: list[BaseException] = []

    def optimize() -> None:
        try:
            study.optimize(n_trials=1)
        except BaseException as error:  # reported below
            errors.append(error)

    worker = threading.Thread(target=optimize, daemon=True)
    with running_dashboard(url) as base:
        worker.start()
        sid = study_id(base, "human")
        browser.get(base.printed)  # the printed URL: its token becomes a cookie
        output = str(reply(demo.make_agent()).data)

        def asked(driver: Any) -> bool:
            assert not errors, errors
            driver.get(f"{base}/dashboard/studies/{sid}/trials?numbers=0")
            try:
                WebDriverWait(driver, 5).until(
                    lambda d: (
                        "Set User Attributes Form" in page_text(d)
                        and "waiting for your score" in page_text(d)
                    )
                )
            except Exception:
                return False
            return True

        WebDriverWait(browser, WAIT_S, poll_frequency=1).until(asked)
        text = page_text(browser)
        assert output.splitlines()[0] in text  # the candidate's output is in the note
        field = browser.find_element(By.CSS_SELECTOR, "input[type='text']")
        field.send_keys(HUMAN_TEXT)
        slider = browser.find_element(By.CSS_SELECTOR, "input[type='range']")
        slider.send_keys(Keys.ARROW_RIGHT, Keys.ARROW_RIGHT, Keys.ARROW_RIGHT)  # 0 -> 0.3
        submit = browser.find_element(By.XPATH, "//button[normalize-space()='Submit']")
        WebDriverWait(browser, WAIT_S).until(lambda d: submit.is_enabled())
        form = browser.find_element(By.XPATH, "//*[text()='Set User Attributes Form']")
        scroll_to(browser, form)
        save(browser, screenshots / "human-form.png")
        submit.click()
        worker.join(timeout=WAIT_S)
    assert not worker.is_alive() and not errors
    record = study.record(0)
    assert record.state == "COMPLETE"
    assert record.value == pytest.approx(0.3)
    assert record.feedback == HUMAN_TEXT
    assert study.trials[0].user_attrs[records.HUMAN_FEEDBACK] == HUMAN_TEXT


def test_a_rebound_name_gets_nothing_from_the_dashboard(
    rebinding_browser: Any, tmp_path: Path
) -> None:
    """A page whose name is rebound to 127.0.0.1 reaches the dashboard's port, with the
    user's cookies for that name; the dashboard answers only its own names."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    demo_study(url, "private", None).optimize(n_trials=2)
    with running_dashboard(url) as base:
        port = base.rsplit(":", 1)[1]
        rebound = f"http://{REBOUND}:{port}"
        rebinding_browser.get(f"{rebound}/dashboard/?token={base.token}")  # even with it
        rebinding_browser.get(f"{rebound}/api/studies")
        text = page_text(rebinding_browser)
        assert f"Host '{REBOUND}:{port}' is not allowed" in text and "private" not in text
        rebinding_browser.get(base.printed)  # the real name still works, in the same browser
        rebinding_browser.get(f"{base}/api/studies")
        assert "private" in page_text(rebinding_browser)


def test_a_page_of_another_origin_can_neither_read_nor_write(browser: Any, tmp_path: Path) -> None:
    """A page served from another local port, opened in the browser that holds the
    dashboard's cookie, calls the dashboard's API: it reads nothing and changes nothing."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    demo_study(url, "private", None).optimize(n_trials=2)
    with running_dashboard(url) as base:
        sid = study_id(base, "private")
        browser.get(base.printed)  # the user's own session: the cookie is set
        page = f"""<html><body><script>
        const base = {base!r}, out = [];
        async function probe() {{
          try {{ const r = await fetch(base + "/api/studies", {{credentials: "include"}});
                 out.push("read:" + (await r.text()).length); }}
          catch (e) {{ out.push("read:blocked"); }}
          try {{ await fetch(base + "/api/studies/{sid}", {{method: "DELETE",
                 credentials: "include"}}); out.push("delete:sent"); }}
          catch (e) {{ out.push("delete:blocked"); }}
          try {{ await fetch(base + "/api/studies/{sid}/rename", {{method: "POST",
                 mode: "no-cors", credentials: "include", headers: {{"Content-Type":
                 "text/plain"}}, body: JSON.stringify({{study_name: "pwned"}})}});
                 out.push("rename:sent"); }}
          catch (e) {{ out.push("rename:blocked"); }}
          document.title = out.join(" ");
        }}
        probe();
        </script></body></html>""".encode()

        with serving(page) as attacker:
            browser.get(attacker)
            WebDriverWait(browser, WAIT_S).until(lambda d: "rename:" in d.title)
            assert "read:blocked" in browser.title  # no CORS: the answer is not readable
        assert study_names(base) == ["private"]  # neither deleted nor renamed


def test_another_page_cannot_frame_the_dashboard(browser: Any, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    demo_study(url, "private", None).optimize(n_trials=2)
    with running_dashboard(url) as base:
        browser.get(base.printed)
        framing = f'<html><body><iframe src="{base}/dashboard/"></iframe></body></html>'
        with serving(framing.encode()) as attacker:
            browser.get(attacker)

            def refused(driver: Any) -> bool:  # Chromium's console says why it blocked it
                messages = [entry["message"] for entry in driver.get_log("browser")]
                return any("frame-ancestors 'none'" in m and "blocked" in m for m in messages)

            WebDriverWait(browser, WAIT_S).until(refused)
