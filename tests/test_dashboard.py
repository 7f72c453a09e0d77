"""optuna-dashboard, started for real on 127.0.0.1, showing what trace_optuna wrote: notes,
feedback, diffs, figures, artifacts; and human feedback typed into its forms."""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterator
import contextlib
import json
from pathlib import Path
import re
import subprocess
import sys
import threading
import time
from typing import Any
import urllib.request

import optuna
from optuna.trial import TrialState
import pytest

import trace_optuna as to
from trace_optuna import demo
from trace_optuna import records
from trace_optuna.dashboard import LONG_TEXT_CHARS
from trace_optuna.dashboard import DashboardObserver
from trace_optuna.dashboard import FigureRefresher
from trace_optuna.dashboard import HumanFeedback
from trace_optuna.dashboard import figure_chunk_key
from trace_optuna.dashboard import figures_stamp
from trace_optuna.dashboard import note_chunk_key
from trace_optuna.dashboard import note_version_key
from trace_optuna.dashboard import read_text
from trace_optuna.dashboard import split_diff
from trace_optuna.dashboard import stored_artifact_store
from trace_optuna.dashboard import trial_note
from trace_optuna.dashboard._notes import _fenced
from trace_optuna.exceptions import ConfigurationError
from trace_optuna.exceptions import RecordError

HUMAN_TEXT = 'The reply should ask for the order number: include "order number" in instructions.'


# -- a real optuna-dashboard ------------------------------------------------------------------


class Served(str):
    """A running dashboard's base URL (``http://127.0.0.1:PORT``), with the URL it printed
    (``.printed``, holding the token) and its token (``.token``, None with ``--no-token``)."""

    printed: str
    token: str | None


def auth(base: str) -> dict[str, str]:
    """The header that carries ``base``'s token, as a script sends it."""
    token = getattr(base, "token", None)
    return {"Authorization": f"Bearer {token}"} if token else {}


@contextlib.contextmanager
def running_dashboard(storage_url: str, *extra: str) -> Iterator[Served]:
    """``trace-optuna dashboard --port 0`` in a subprocess; yields its base URL."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "trace_optuna",
            "dashboard",
            "--storage",
            storage_url,
            "--port",
            "0",
        ]
        + list(extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()  # printed once the socket is bound
        match = re.search(r"(http://127\.0\.0\.1:\d+)/dashboard/(\?token=(\S+))?", first)
        if match is None:
            process.kill()
            raise AssertionError(f"no address printed: {first!r} {process.stderr.read()!r}")
        rest = [process.stdout.readline(), process.stdout.readline()]
        if "--no-token" in extra:
            assert match.group(3) is None and "warning: --no-token" in rest[1]
        else:
            assert match.group(3) and "Only this URL opens it" in rest[1]
        served = Served(match.group(1))
        served.printed = match.group(0)
        served.token = match.group(3)
        yield served
    finally:
        process.terminate()
        process.wait(timeout=30)


def get_json(base: str, path: str) -> Any:
    request = urllib.request.Request(base + path, headers=auth(base))
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def get_bytes(base: str, path: str) -> bytes:
    request = urllib.request.Request(base + path, headers=auth(base))
    with urllib.request.urlopen(request, timeout=30) as response:
        return bytes(response.read())


def post_json(base: str, path: str, body: dict[str, Any]) -> int:
    request = urllib.request.Request(
        base + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **auth(base)},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return int(response.status)


def study_names(base: str) -> list[str]:
    return [study["study_name"] for study in get_json(base, "/api/studies")["study_summaries"]]


def study_id(base: str, name: str) -> int:
    studies = get_json(base, "/api/studies")["study_summaries"]
    return next(study["study_id"] for study in studies if study["study_name"] == name)


def wait_for(condition: Callable[[], Any], timeout: float = 120.0, what: str = "") -> Any:
    """Poll ``condition`` until it returns something truthy (the dashboard is another process)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def attrs_of(item: dict[str, Any]) -> dict[str, str]:
    return {attr["key"]: attr["value"] for attr in item["user_attrs"]}


# -- a study written by trace_optuna ----------------------------------------------------------


def demo_study(
    storage_url: str, name: str, artifact_dir: Path | None, **kwargs: Any
) -> to.TraceStudy:
    return to.create_study(
        study_name=name,
        storage=storage_url,
        agent=demo.make_agent,
        evaluate=demo.evaluate,
        llm=to.LLM(demo.DEMO_LLM, simulated_seed=0),
        seed=0,
        error_score=0.0,
        artifact_dir=artifact_dir,
        load_if_exists=True,
        **kwargs,
    )


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, to.TraceStudy, Path]:
    directory = tmp_path_factory.mktemp("dashboard")
    url = f"sqlite:///{directory / 'study.db'}"
    study = demo_study(url, "browse", directory / "artifacts")
    study.optimize(n_trials=5)
    return url, study, directory / "artifacts"


@pytest.mark.slow  # starts Python processes that import trace_optuna
def test_the_rest_api_shows_each_trials_note_feedback_diff_and_llm_usage(
    written: tuple[str, to.TraceStudy, Path],
) -> None:
    url, study, _ = written
    with running_dashboard(url) as base:
        detail = get_json(base, f"/api/studies/{study_id(base, 'browse')}")
    trials = {item["number"]: item for item in detail["trials"]}
    assert len(trials) == 5
    steps = 0
    for number, item in trials.items():
        record = study.record(number)
        note = item["note"]["body"]
        assert note.startswith(f"## Trial {number}: `{record.strategy}`")
        assert record.feedback and record.feedback in note
        assert f"score {record.value:.4g}" in note
        assert attrs_of(item)[records.FEEDBACK] == record.feedback
        if record.parents:
            steps += 1
            assert "### Feedback that drove this step" in note
            assert record.parent_feedback and record.parent_feedback in note
            for path, block in split_diff(record.diff, record.changed).items():
                assert f"#### `{path}`" in note
                assert f"```diff\n{block}\n```" in note
            assert f"trial {record.parents[0]}" in note
            assert "| `simulated/feedback-follower` | 1 |" in note
            assert f"{record.llm['prompt_tokens']:,}" in note
            temperature = record.params["optoprime.temperature"]
            assert f"`optoprime.temperature` = {temperature:.4g}" in note
    assert steps >= 3
    assert detail["objective_names"] == ["score"]  # study.set_metric_names
    study_attrs = attrs_of(detail)
    assert "SupportAgent" in study_attrs[records.STUDY_AGENT]
    assert "trace_optuna.demo.evaluate" in study_attrs[records.STUDY_EVALUATION]
    assert "OptoPrime" in study_attrs[records.STUDY_STRATEGY_DOCS]


@pytest.mark.slow  # starts Python processes that import trace_optuna
def test_figures_are_saved_into_the_study_and_served(
    written: tuple[str, to.TraceStudy, Path],
) -> None:
    url, study, _ = written
    with running_dashboard(url) as base:
        sid = study_id(base, "browse")
        detail = get_json(base, f"/api/studies/{sid}")
    served = {item["id"]: item for item in detail["plotly_graph_objects"]}
    assert set(served) == {
        "trace-score-history",
        "trace-strategy-usage",
        "trace-lineage",
        "trace-cost",
        "trace-parameter-sensitivity",
        "trace-stop-versions",
    }
    history = json.loads(served["trace-score-history"]["graph_object"])
    names = [trace.get("name") for trace in history["data"]]
    assert names[:2] == ["baseline", "optoprime"] and "best so far" in names
    assert len(history["data"][1]["x"]) == 4  # every optoprime trial is a point
    lineage = json.loads(served["trace-lineage"]["graph_object"])
    texts = [text for trace in lineage["data"] for text in trace.get("text") or []]
    assert f'<a href="/dashboard/studies/{sid}/trials?numbers=4">#4</a>' in texts


@pytest.mark.slow  # starts Python processes that import trace_optuna
def test_long_prompts_go_to_artifacts_that_the_dashboard_serves(
    written: tuple[str, to.TraceStudy, Path],
) -> None:
    url, study, artifact_dir = written
    frozen = study.trials[2]
    offloaded = frozen.user_attrs[records.ARTIFACTS]
    key = records.llm_call_key(0, "user")
    assert key in offloaded
    head = records.decode(frozen.user_attrs, key)  # in trace:llm_calls, as stored
    assert len(head) < 1_000 and offloaded[key]["filename"] in head
    assert study.optuna.user_attrs[records.STUDY_ARTIFACT_DIR] == str(artifact_dir.resolve())
    with pytest.raises(RecordError, match="artifact"):
        read_text(frozen, key)
    full = read_text(frozen, key, stored_artifact_store(study.optuna))
    assert full is not None and len(full) == offloaded[key]["chars"] > 2_000
    assert full.startswith(head.split("\n... [", 1)[0])
    assert "#Feedback" in full
    # The dashboard was started without --artifact-dir: it found the study's directory.
    with running_dashboard(url) as base:
        sid = study_id(base, "browse")
        item = get_json(base, f"/api/studies/{sid}")["trials"][2]
        listed = {artifact["filename"]: artifact for artifact in item["artifacts"]}
        artifact = listed[offloaded[key]["filename"]]
        served = get_bytes(base, f"/artifacts/{sid}/{item['trial_id']}/{artifact['artifact_id']}")
    assert served.decode("utf-8") == full
    note = item["note"]["body"]
    assert f"user: artifact `{offloaded[key]['filename']}`" in note


def test_without_an_artifact_store_long_texts_stay_in_chunked_attributes(
    sqlite_url: str,
) -> None:
    study = demo_study(sqlite_url, "no-artifacts", None, figure_interval=None)
    study.optimize(n_trials=2)
    frozen = study.trials[1]
    assert records.ARTIFACTS not in frozen.user_attrs
    system = study.record(1).llm_calls[0]["system"]
    assert len(system) > LONG_TEXT_CHARS and "more characters: artifact" not in system


def test_load_study_uses_the_artifact_directory_the_study_recorded(
    written: tuple[str, to.TraceStudy, Path],
) -> None:
    url, study, artifact_dir = written
    again = to.load_study(
        study_name="browse",
        storage=url,
        agent=demo.make_agent,
        evaluate=demo.evaluate,
        llm=demo.DEMO_LLM,
    )
    (store,) = [
        observer.artifact_store
        for observer in again.objective.observers
        if isinstance(observer, DashboardObserver)
    ]
    assert isinstance(store, optuna.artifacts.FileSystemArtifactStore)
    assert read_text(study.trials[1], records.llm_call_key(0, "user"), store)


@pytest.mark.slow  # starts Python processes that import trace_optuna
def test_the_stock_optuna_dashboard_command_shows_the_notes_too(
    written: tuple[str, to.TraceStudy, Path], tmp_path: Path
) -> None:
    import socket

    url, study, _ = written
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "optuna-dashboard"),
            url,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--quiet",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def up() -> Any:
            try:
                return get_json(base, "/api/studies")
            except OSError:
                return None

        wait_for(up, 60, "optuna-dashboard to listen")
        detail = get_json(base, f"/api/studies/{study_id(base, 'browse')}")
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert study.record(3).feedback in detail["trials"][3]["note"]["body"]


def raw_request(
    base: str,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request with exactly ``headers``: any ``Host``, no ``Accept-Encoding`` unless
    given (as curl or a health check sends it; urllib sends ``identity``), no cookies, no
    redirects followed."""
    import http.client

    host, port = base.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        headers = headers or {}
        connection.putrequest(method, path, skip_host="Host" in headers, skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        if body is not None:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def test_static_files_are_served_to_clients_that_send_no_accept_encoding(
    written: tuple[str, to.TraceStudy, Path],
) -> None:
    url, _, _ = written
    with running_dashboard(url) as base:
        status, headers, body = raw_request(base, "GET", "/static/bundle.js", auth(base))
        assert status == 200, body[:500]
        assert "Content-Encoding" not in headers and len(body) > 100_000
        assert get_bytes(base, "/static/bundle.js") == body  # as urllib (identity) gets it
        status, _, icon = raw_request(base, "GET", "/favicon.ico", auth(base))
        assert status == 200 and icon
        request = urllib.request.Request(
            base + "/static/bundle.js", headers={"Accept-Encoding": "gzip", **auth(base)}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.headers["Content-Encoding"] == "gzip"  # still compressed on request


def test_the_dashboard_serves_a_study_on_read_only_media(tmp_path: Path) -> None:
    from test_storage import read_only_directory

    media = tmp_path / "media"
    media.mkdir()
    url = f"sqlite:///{media / 'demo.db'}"
    subprocess.run(
        [sys.executable, "-m", "trace_optuna", "demo", "--trials", "2", "--no-progress"]
        + ["--storage", url],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        timeout=300,
    )
    assert sorted(path.name for path in media.iterdir()) == ["demo.db"]
    with read_only_directory(media, tmp_path / "ro") as place:
        with running_dashboard(f"sqlite:///{place / 'demo.db'}") as base:
            detail = get_json(base, f"/api/studies/{study_id(base, 'trace-optuna-demo')}")
        assert len(detail["trials"]) == 2
        assert detail["trials"][1]["note"]["body"].startswith("## Trial 1: `optoprime`")
        assert sorted(path.name for path in place.iterdir()) == ["demo.db"]


def test_a_port_in_use_is_one_clear_line(written: tuple[str, to.TraceStudy, Path]) -> None:
    import socket

    url, _, _ = written
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "trace_optuna", "dashboard", "--storage", url]
            + ["--port", str(port)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"--port {port}: cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "--port 0" in result.stderr


# -- notes, unit by unit ----------------------------------------------------------------------


def test_a_failed_trials_note_says_why() -> None:
    note = trial_note(
        7,
        {
            records.STRATEGY: "genetic",
            records.PARENTS: [3, 5],
            records.PARENT_SCORE: 0.5,
            records.ERROR: "LLMError: the provider refused",
            records.CHANGED: [],
        },
        {"strategy": "genetic", "genetic.mutation_rate": 0.25, "optoprime.temperature": 0.3},
    )
    assert note.startswith("## Trial 7: `genetic`, failed")
    assert "```text\nLLMError: the provider refused\n```" in note
    assert "trial 3, trial 5 (score 0.5)" in note
    assert "`genetic.mutation_rate` = 0.25" in note and "optoprime.temperature" not in note


def dataset_step(accepted: bool | None, validation: dict[str, Any] | None) -> dict[str, Any]:
    """A dataset trial's record: two minibatch examples, before (parent) and after."""
    parent = None if accepted is None else [0.0, 1.0]
    candidate = [1.0, 0.5] if accepted is not False else [0.0, 0.5]
    return {
        records.STRATEGY: "optoprime" if parent else records.BASELINE,
        records.PARENTS: [2] if parent else [],
        records.SCORE: validation["mean"] if validation else sum(candidate) / 2,
        records.MINIBATCH: ["order-7", "order|9"],
        records.MINIBATCH_SCORES: {"parent": parent, "candidate": candidate},
        records.MINIBATCH_FEEDBACK: {
            "parent": None if parent is None else ['expected "9.00 EUR", got\n"12"', "Correct."],
            "candidate": ["Correct." if candidate[0] else "expected 9", "x | y " * 60],
        },
        records.MINIBATCH_SCORE: sum(candidate) / 2,
        records.PARENT_MINIBATCH_SCORE: None if parent is None else 0.5,
        records.ACCEPTED: accepted,
        records.VALIDATED: accepted is not False,
        records.VALIDATION: validation,
    }


def test_a_dataset_trials_note_shows_its_minibatch_before_and_after() -> None:
    validation = {"mean": 0.8, "scored": 18, "total": 18, "ran": 4, "pruned": False}
    note = trial_note(5, dataset_step(True, validation), {"strategy": "optoprime"})
    assert note.startswith("## Trial 5: `optoprime`, score 0.8\n")
    assert "- **Score:** 0.8 (validation mean)" in note
    assert "- **Minibatch mean:** 0.5 → 0.75; **accepted**" in note
    assert "- **Validation mean:** 0.8 over 18 of 18 examples (4 run now" in note
    table = note[note.index("| example | parent | candidate |") :].splitlines()
    # Each row: the example, its scores before and after, the change, both feedback texts,
    # on one line (newlines folded, pipes escaped, long text cut).
    assert table[2] == '| `order-7` | 0 | 1 | +1 | expected "9.00 EUR", got "12" | Correct. |'
    assert table[3].startswith("| `order\\|9` | 1 | 0.5 | -0.5 | Correct. | x \\| y x \\| y")
    assert table[3].endswith("… |") and len(table[3]) < 300

    rejected = trial_note(6, dataset_step(False, None), {"strategy": "optoprime"})
    assert rejected.startswith("## Trial 6: `optoprime`, score 0.25, not validated\n")
    assert "- **Score:** 0.25 (minibatch mean, not validated)" in rejected
    assert "0.5 → 0.25; **rejected**: worse than its parent there" in rejected
    assert "- **Validation:** none; the trial's value is its minibatch mean" in rejected
    assert "| `order-7` | 0 | 0 | = | expected" in rejected

    pruned = {"mean": 0.1, "scored": 6, "total": 18, "ran": 6, "pruned": True}
    root = trial_note(0, dataset_step(None, pruned), {})
    assert "- **Minibatch mean:** 0.75; a root candidate" in root
    assert "6 of 18 examples (6 run now, the rest read from stored rows); **stopped by" in root
    assert "| example | score | feedback |" in root and "| `order-7` | 1 | Correct. |" in root
    assert "### Minibatch" not in trial_note(1, {records.STRATEGY: "optoprime"}, {})
    failed = {records.STRATEGY: "optoprime", records.ERROR: "boom", records.MINIBATCH: ["a"]}
    assert "Examples: `a` (not scored)" in trial_note(2, failed, {})


def test_split_diff_keeps_lines_that_look_like_headers() -> None:
    diff = "\n".join(
        [
            "--- a (parent)",
            "+++ a (candidate)",
            "@@ -1 +1 @@",
            "--- a (parent)",  # a removed line "-- a (parent)"
            "+x",
            "--- b (parent)",
            "+++ b (candidate)",
            "@@ -1 +1 @@",
            "-1",
            "+2",
        ]
    )
    blocks = split_diff(diff, ["a", "b"])
    assert blocks["a"].splitlines()[3] == "--- a (parent)"
    assert blocks["b"].splitlines()[-1] == "+2"


def test_fenced_text_cannot_be_closed_by_its_own_backticks() -> None:
    block = _fenced("use ```python\nprint()\n``` here", "text")
    assert block.startswith("````text\n") and block.endswith("\n````")
    long = _fenced("x" * 5000, "text", limit=100)
    assert "4,900 more characters" in long


# -- human feedback from the dashboard --------------------------------------------------------


def reply(agent: Any) -> Any:
    return agent.reply(demo.QUESTION)


def human_study(url: str, name: str, evaluate: HumanFeedback) -> to.TraceStudy:
    return to.create_study(
        study_name=name,
        storage=url,
        agent=demo.make_agent,
        evaluate=evaluate,
        llm=to.LLM(demo.DEMO_LLM, simulated_seed=0),
        seed=0,
        load_if_exists=True,
        figure_interval=None,
    )


def test_human_feedback_arguments_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="run"):
        HumanFeedback("not callable")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="low < high"):
        HumanFeedback(reply, low=1, high=0)
    with pytest.raises(ConfigurationError, match="choices"):
        HumanFeedback(reply, choices={"good": "yes"})  # type: ignore[dict-item]
    with pytest.raises(ConfigurationError, match="study.optimize"):
        HumanFeedback(reply)(demo.make_agent())


@pytest.mark.slow  # starts Python processes that import trace_optuna
def test_a_person_scores_in_the_dashboard_and_the_text_drives_the_next_step(
    sqlite_url: str,
) -> None:
    evaluate = HumanFeedback(reply, timeout=300, poll_interval=0.1)
    study = human_study(sqlite_url, "human", evaluate)
    errors: list[BaseException] = []

    def optimize() -> None:
        try:
            study.optimize(n_trials=2)
        except BaseException as error:  # surfaced by the assertions below
            errors.append(error)

    worker = threading.Thread(target=optimize, daemon=True)
    with running_dashboard(sqlite_url) as base:
        worker.start()
        sid = study_id(base, "human")

        def waiting(number: int) -> dict[str, Any] | None:
            detail = get_json(base, f"/api/studies/{sid}")
            for item in detail["trials"]:
                if item["number"] == number and item["state"] == "Running":
                    # Notes are read fresh; trials are cached by the dashboard for 2 s.
                    if "waiting for your score" in item["note"]["body"] and (
                        records.HUMAN_OUTPUT in attrs_of(item)
                    ):
                        return {"item": item, "detail": detail}
            assert not errors, errors
            return None

        # Trial 0: the unmodified agent. The form is the dashboard's user-attribute form.
        asked = wait_for(lambda: waiting(0), what="trial 0 to ask")
        form = asked["detail"]["form_widgets"]
        assert form["output_type"] == "user_attr"
        assert [w["user_attr_key"] for w in form["widgets"]] == [
            records.HUMAN_SCORE,
            records.HUMAN_FEEDBACK,
        ]
        assert [w["type"] for w in form["widgets"]] == ["slider", "text"]
        first_output = str(reply(demo.make_agent()).data)
        assert first_output in asked["item"]["note"]["body"]
        assert attrs_of(asked["item"])[records.HUMAN_OUTPUT] == first_output
        status = post_json(
            base,
            f"/api/trials/{asked['item']['trial_id']}/user-attrs",
            {"user_attrs": {records.HUMAN_SCORE: 0.2, records.HUMAN_FEEDBACK: HUMAN_TEXT}},
        )
        assert status == 204

        # Trial 1: OptoPrime followed the person's text; the note shows output and diff.
        asked = wait_for(lambda: waiting(1), what="trial 1 to ask")
        note = asked["item"]["note"]["body"]
        shown = attrs_of(asked["item"])[records.HUMAN_OUTPUT]
        assert shown != first_output and shown in note  # the candidate's output, not the parent's
        assert "```diff" in note and "order number" in note
        assert HUMAN_TEXT in note  # the feedback that drove the step
        post_json(
            base,
            f"/api/trials/{asked['item']['trial_id']}/user-attrs",
            {"user_attrs": {records.HUMAN_SCORE: 0.8, records.HUMAN_FEEDBACK: "Good. Shorter."}},
        )
        worker.join(timeout=300)
        final = get_json(base, f"/api/studies/{sid}")
    assert not worker.is_alive() and not errors
    first, second = study.record(0), study.record(1)
    assert (first.state, first.value, first.feedback) == ("COMPLETE", 0.2, HUMAN_TEXT)
    assert (second.state, second.value, second.feedback) == ("COMPLETE", 0.8, "Good. Shorter.")
    assert second.parent_feedback == HUMAN_TEXT and second.parents == [0]
    assert HUMAN_TEXT in second.llm_calls[0]["user"]  # the person's text was Trace's feedback
    assert "order number" in second.snapshot["instructions"]
    note = final["trials"][1]["note"]["body"]
    assert "### Feedback on this candidate\n\n```text\nGood. Shorter.\n```" in note
    assert study.trials[1].user_attrs[records.HUMAN]["status"] == "answered"


def test_nobody_answers_the_trial_fails_and_keeps_its_candidate(sqlite_url: str) -> None:
    # Trial 0 is judged by a person (written where the dashboard's form writes); then a new
    # process's study re-runs the parent without asking again, and nobody answers trial 1.
    storage = optuna.storages.RDBStorage(sqlite_url)
    answered = HumanFeedback(reply, timeout=300, poll_interval=0.05)
    study = human_study(sqlite_url, "timeout", answered)

    def person() -> None:
        def asked() -> Any:
            trials = study.optuna.get_trials(states=(TrialState.RUNNING,))
            return trials if trials and records.HUMAN in trials[0].user_attrs else None

        (trial,) = wait_for(asked, what="the question")
        storage.set_trial_user_attr(trial._trial_id, records.HUMAN_SCORE, 0.2)
        storage.set_trial_user_attr(trial._trial_id, records.HUMAN_FEEDBACK, HUMAN_TEXT)

    helper = threading.Thread(target=person)
    helper.start()
    study.optimize(n_trials=1)
    helper.join()
    assert study.record(0).value == 0.2

    impatient = HumanFeedback(reply, timeout=1.0, poll_interval=0.05)
    again = human_study(sqlite_url, "timeout", impatient)
    again.optimize(n_trials=1)
    frozen = again.trials[1]
    assert frozen.state == TrialState.FAIL
    assert "HumanFeedbackTimeout" in frozen.user_attrs[records.ERROR]
    assert frozen.user_attrs[records.HUMAN]["status"] == "timed out"
    record = again.record(1)
    assert record.parents == [0] and record.parent_feedback == HUMAN_TEXT
    assert "order number" in record.snapshot["instructions"]  # the candidate is kept
    # The person was asked about the candidate, not about the parent (already judged).
    assert (
        frozen.user_attrs[records.HUMAN_OUTPUT] != again.trials[0].user_attrs[records.HUMAN_OUTPUT]
    )
    assert "```diff" in _note(again.optuna, frozen)


def _note(study: optuna.Study, frozen: optuna.trial.FrozenTrial) -> str:
    from optuna_dashboard import get_note

    return str(get_note(optuna.Trial(study, frozen._trial_id)))


def test_a_negative_figure_interval_is_refused(sqlite_url: str) -> None:
    with pytest.raises(ConfigurationError, match="figure_interval"):
        demo_study(sqlite_url, "bad-interval", None, figure_interval=-1)


# -- what a trial costs: figures once per interval for all workers, no dashboard import -------


def test_without_notes_a_trial_writes_nothing_to_its_studys_rows(sqlite_url: str) -> None:
    study = demo_study(sqlite_url, "quiet", None, dashboard_notes=False, figure_interval=None)
    storage, study_id = study.optuna._storage, study.optuna._study_id
    before = storage.get_study_system_attrs(study_id)
    study.optimize(n_trials=3)
    assert storage.get_study_system_attrs(study_id) == before  # no note keys at all
    assert study.record(2).feedback  # the record is whole
    noted = demo_study(sqlite_url, "noted", None, figure_interval=None)
    noted.optimize(n_trials=1)
    assert note_version_key(noted.trials[0]._trial_id) in storage.get_study_system_attrs(
        noted.optuna._study_id
    )
    with pytest.raises(ConfigurationError, match="dashboard_notes must be True or False"):
        demo_study(sqlite_url, "bad", None, dashboard_notes="no")


def test_note_and_figure_keys_are_optuna_dashboards_own() -> None:
    from optuna_dashboard import _custom_plot_data
    from optuna_dashboard import _note

    body = "".join(chr(0x41 + i % 50) for i in range(5_000))  # three chunks
    assert _note.split_body(body, 7) == {
        note_chunk_key(7, index): body[index * 2045 : (index + 1) * 2045] for index in range(3)
    }
    assert _note.note_ver_key(7) == note_version_key(7)
    prefix = _custom_plot_data.SYSTEM_ATTR_PLOT_DATA + "trace-cost:"
    assert _custom_plot_data.split_plot_data(body, prefix) == {
        figure_chunk_key("trace-cost", index): body[index * 2045 : (index + 1) * 2045]
        for index in range(3)
    }
    assert _note.SYSTEM_ATTR_MAX_LENGTH == _custom_plot_data.SYSTEM_ATTR_MAX_LENGTH == 2045


@pytest.mark.slow  # starts Python processes that import trace_optuna
def test_a_trial_imports_neither_optuna_dashboard_nor_plotly(sqlite_url: str) -> None:
    code = f"""
import sys
import trace_optuna as to
from trace_optuna import demo
study = to.create_study(study_name="imports", storage={sqlite_url!r}, agent=demo.make_agent,
                        evaluate=demo.evaluate, llm=demo.DEMO_LLM, figure_interval=None)
study.optimize(n_trials=3)
print(sorted(name for name in sys.modules if name.split(".")[0] in ("optuna_dashboard", "plotly")))
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    assert result.stdout.strip().splitlines()[-1] == "[]"
    # ...and the trials have their notes, as optuna-dashboard reads them.
    study = optuna.load_study(study_name="imports", storage=sqlite_url)
    for frozen in study.trials:
        assert _note(study, frozen).startswith(f"## Trial {frozen.number}: ")


def saved_figures(study: optuna.Study) -> dict[str, str]:
    """The figures' JSON as optuna-dashboard reads it from the study."""
    from optuna_dashboard._custom_plot_data import get_plotly_graph_objects

    return get_plotly_graph_objects(study._storage.get_study_system_attrs(study._study_id))


def test_two_workers_save_the_figures_at_most_once_per_interval(
    storage_url: str, study_name: str
) -> None:
    first = demo_study(storage_url, study_name, None, figure_interval=3600)
    second = demo_study(storage_url, study_name, None, figure_interval=3600)  # another worker
    first.optimize(n_trials=2)
    stamp = figures_stamp(first.optuna)
    assert stamp is not None and set(stamp["chunks"]) == {
        "trace-score-history",
        "trace-strategy-usage",
        "trace-lineage",
        "trace-cost",
        "trace-parameter-sensitivity",
        "trace-stop-versions",
    }
    figures = saved_figures(first.optuna)
    assert len(json.loads(figures["trace-score-history"])["data"][1]["x"]) == 1

    # Fresh figures: the other worker's trials and its optimize's return save none, nor does
    # the worker that saved them when it optimizes again.
    second.optimize(n_trials=2)
    first.optimize(n_trials=1)
    assert figures_stamp(second.optuna) == stamp
    assert saved_figures(second.optuna) == figures

    # An hour later both workers find them stale at the same moment: one of them saves.
    first.optuna.set_user_attr(records.STUDY_FIGURES, {**stamp, "saved_at": time.time() - 3700})
    barrier = threading.Barrier(2)
    saved: list[bool] = []

    def refresh(study: to.TraceStudy) -> None:
        refresher = FigureRefresher(3600, study.objective.coordinator_for(study.optuna))
        barrier.wait()
        saved.append(refresher.refresh(study.optuna))

    threads = [threading.Thread(target=refresh, args=(study,)) for study in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(saved) == [False, True]
    stamp_now = figures_stamp(second.optuna)
    assert stamp_now is not None and stamp_now["saved_at"] > stamp["saved_at"]
    history = json.loads(saved_figures(second.optuna)["trace-score-history"])
    assert len(history["data"][1]["x"]) == 4  # the five trials: a baseline and four steps
