"""``trace-optuna dashboard`` is safe to run: a real server probed as an attacker would (a
foreign ``Host``, no token, a write from another origin or site, a form-encoded write, framing),
its read-only mode, and its start-up rules for a dashboard others reach."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import subprocess
import sys
from typing import Any

import pytest
from test_dashboard import auth
from test_dashboard import demo_study
from test_dashboard import raw_request
from test_dashboard import running_dashboard
from test_dashboard import study_id
from test_dashboard import study_names

from trace_optuna.dashboard import GuardSettings
from trace_optuna.dashboard._commands import guard_settings
from trace_optuna.exceptions import ConfigurationError

pytest.importorskip("optuna_dashboard", reason="needs the dashboard extra")


@pytest.fixture(scope="module")
def study_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    directory = tmp_path_factory.mktemp("guarded")
    url = f"sqlite:///{directory / 'study.db'}"
    demo_study(url, "guarded", None).optimize(n_trials=2)
    return url


def test_a_foreign_host_can_neither_read_nor_delete(study_url: str) -> None:
    with running_dashboard(study_url) as base:
        port = base.rsplit(":", 1)[1]
        sid = study_id(base, "guarded")
        foreign = {"Host": f"evil.example:{port}", **auth(base)}
        status, _, body = raw_request(base, "GET", "/api/studies", foreign)
        assert status == 403 and b"guarded" not in body
        assert f"Host 'evil.example:{port}' is not allowed".encode() in body
        assert f"--allowed-hosts evil.example:{port}".encode() in body
        origin = {"Origin": f"http://evil.example:{port}"}
        status, _, _ = raw_request(base, "DELETE", f"/api/studies/{sid}", {**foreign, **origin})
        assert status == 403
        assert "guarded" in study_names(base)  # still there
        for own in (f"localhost:{port}", f"127.0.0.1:{port}"):
            assert raw_request(base, "GET", "/api/meta", {"Host": own, **auth(base)})[0] == 200


def test_a_request_without_the_token_is_refused(study_url: str) -> None:
    with running_dashboard(study_url) as base:
        assert base.token and len(base.token) >= 24
        status, _, body = raw_request(base, "GET", "/api/studies")
        assert status == 401 and b"guarded" not in body and b"?token=" in body
        wrong = {"Authorization": "Bearer " + "x" * len(base.token)}
        assert raw_request(base, "GET", "/api/studies", wrong)[0] == 401
        assert raw_request(base, "GET", "/dashboard/?token=" + "y" * 32)[0] == 401
        # The printed URL: the token becomes a cookie and leaves the address bar.
        status, headers, _ = raw_request(base, "GET", f"/dashboard/studies/1?token={base.token}")
        assert status == 303 and headers["Location"] == "/dashboard/studies/1"
        cookie = headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        name_value = cookie.split(";")[0]
        assert name_value.endswith("=" + base.token)
        status, _, body = raw_request(base, "GET", "/api/studies", {"Cookie": name_value})
        assert status == 200 and b"guarded" in body
        assert raw_request(base, "GET", "/api/studies", auth(base))[0] == 200  # scripts


def test_writes_come_only_from_the_dashboards_own_page(study_url: str) -> None:
    with running_dashboard(study_url) as base:
        sid = study_id(base, "guarded")
        port = base.rsplit(":", 1)[1]
        token = auth(base)
        note = json.dumps({"version": 1, "body": "hello"}).encode()
        as_json = {"Content-Type": "application/json", **token}
        other_origin = {**as_json, "Origin": "http://127.0.0.1:1"}
        status, _, body = raw_request(base, "PUT", f"/api/studies/{sid}/note", other_origin, note)
        assert status == 403 and b"origin 'http://127.0.0.1:1' is refused" in body
        cross_site = {**as_json, "Sec-Fetch-Site": "cross-site"}
        status, _, body = raw_request(base, "PUT", f"/api/studies/{sid}/note", cross_site, note)
        assert status == 403 and b"Sec-Fetch-Site: cross-site" in body
        form = {"Content-Type": "text/plain", **token}  # what a cross-site form can send
        status, _, body = raw_request(base, "POST", "/api/studies", form, b'{"study_name": "x"}')
        assert status == 403 and b"application/json" in body
        own = {**as_json, "Origin": f"http://127.0.0.1:{port}", "Sec-Fetch-Site": "same-origin"}
        status, _, body = raw_request(base, "PUT", f"/api/studies/{sid}/note", own, note)
        assert status == 204, body  # the page's own write goes through


def test_every_answer_forbids_framing_and_referrers(study_url: str) -> None:
    with running_dashboard(study_url) as base:
        for path in ("/dashboard/", "/api/studies", "/favicon.ico"):
            _, headers, _ = raw_request(base, "GET", path, auth(base))
            assert headers["X-Frame-Options"] == "DENY"
            assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
            assert headers["X-Content-Type-Options"] == "nosniff"
            assert headers["Referrer-Policy"] == "no-referrer"
            assert "Access-Control-Allow-Origin" not in headers
        _, headers, _ = raw_request(base, "GET", "/dashboard/", auth(base))
        # optuna-dashboard's own policy for its page is kept, with framing added.
        assert "default-src 'self'" in headers["Content-Security-Policy"]


WRITES = [
    ("POST", "/api/studies", {"study_name": "new", "directions": ["minimize"]}),
    ("POST", "/api/studies/{sid}/rename", {"study_name": "renamed"}),
    ("PUT", "/api/studies/{sid}/note", {"version": 1, "body": "x"}),
    ("PUT", "/api/studies/{sid}/{tid}/note", {"version": 1, "body": "x"}),
    ("POST", "/api/trials/{tid}/user-attrs", {"user_attrs": {"x": 1}}),
    ("POST", "/api/trials/{tid}/tell", {"state": "Fail"}),
    ("POST", "/api/studies/{sid}/preference", {"mode": "ChooseWorst", "candidates": []}),
    ("DELETE", "/api/studies/{sid}", None),
]


def test_read_only_refuses_every_write_and_says_so(study_url: str) -> None:
    with running_dashboard(study_url, "--read-only") as base:
        sid = study_id(base, "guarded")
        detail = json.loads(raw_request(base, "GET", f"/api/studies/{sid}", auth(base))[2])
        tid = detail["trials"][0]["trial_id"]
        for method, path, payload in WRITES:
            body = None if payload is None else json.dumps(payload).encode()
            headers = {"Content-Type": "application/json", **auth(base)}
            status, _, answer = raw_request(
                base, method, path.format(sid=sid, tid=tid), headers, body
            )
            assert status == 403 and b"read-only" in answer, (method, path, answer)
        assert study_names(base) == ["guarded"]
        status, _, page = raw_request(base, "GET", "/dashboard/", auth(base))
        assert status == 200 and b"Read-only dashboard" in page


def test_the_storage_may_be_positional_and_no_token_is_a_warned_choice(
    study_url: str, tmp_path: Path
) -> None:
    with running_dashboard(study_url, "--no-token") as base:
        status, _, body = raw_request(base, "GET", "/api/studies")
        assert status == 200 and b"guarded" in body
    command = [sys.executable, "-m", "trace_optuna", "dashboard", study_url, "--port", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        assert "?token=" in process.stdout.readline()
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--host", "0.0.0.0"], "--allowed-hosts"),
        (["--host", "0.0.0.0", "--allowed-hosts", "dash.internal"], "--token VALUE"),
        (["--token", "short"], "at least 16 characters"),
        (["--allowed-origins", "app.example"], "is not an origin"),
    ],
)
def test_a_dashboard_others_reach_needs_names_and_a_shared_token(
    study_url: str, options: list[str], message: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACE_OPTUNA_DASHBOARD")}
    done = subprocess.run(
        [sys.executable, "-m", "trace_optuna", "dashboard", study_url, "--port", "0", *options],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode != 0 and message in done.stderr, done.stderr
    assert "optuna-dashboard for" not in done.stdout  # it never started


def _args(**options: Any) -> argparse.Namespace:
    defaults: dict[str, Any] = dict(
        host="127.0.0.1",
        port=8080,
        allowed_hosts="",
        allowed_origins="",
        token=None,
        no_token=False,
        read_only=False,
    )
    return argparse.Namespace(**{**defaults, **options})


def test_a_team_dashboard_starts_with_names_and_a_token() -> None:
    token = "t" * 20
    settings = guard_settings(
        _args(host="0.0.0.0", allowed_hosts="dash.internal,*.corp:8080", token=token)
    )
    assert settings.token == token and settings.allowed_hosts == ("dash.internal", "*.corp:8080")
    assert settings.host_allowed("dash.internal")  # behind a proxy: any port
    assert settings.host_allowed("DASH.internal:443")
    assert settings.host_allowed("a.corp:8080") and not settings.host_allowed("a.corp:9090")
    assert not settings.host_allowed("127.0.0.1:8080")  # a team bind names its hosts
    with pytest.raises(ConfigurationError, match="--allowed-hosts"):
        guard_settings(_args(host="10.0.0.5", token=token))
    assert guard_settings(_args(host="0.0.0.0", allowed_hosts="x", no_token=True)).token is None


def test_a_loopback_dashboard_answers_its_own_names_only() -> None:
    settings = GuardSettings(host="127.0.0.1", port=8080)
    for host in ("127.0.0.1:8080", "localhost:8080", "[::1]:8080"):
        assert settings.host_allowed(host)
    for host in ("127.0.0.1:8081", "evil.example:8080", "localhost.evil:8080", "", "127.0.0.1"):
        assert not settings.host_allowed(host)
