"""``LLM``: accounting, settings, validation, and failures against a real local HTTP server."""

from __future__ import annotations

import json
import pickle
import time
from typing import Any

from opto.optimizers import OptoPrime
import pytest
from support_openai_server import OpenAIServer
from support_openai_server import Reply

from trace_optuna.exceptions import ConfigurationError
from trace_optuna.exceptions import LLMError
from trace_optuna.llm import LLM
from trace_optuna.llm import LLMCall
from trace_optuna.testing import simulated

SIMULATED = "simulated/feedback-follower"
API_KEY = "sk-test-do-not-leak-0123456789"
HELLO = [{"role": "user", "content": "Hello"}]
# The server asks for this retry delay, so retries are fast without tuning litellm.
FAST_RETRY = {"retry-after-ms": "10"}


@pytest.fixture(autouse=True)
def _fresh_simulation() -> None:
    simulated.reset_simulated_model()


@pytest.fixture
def server() -> Any:
    with OpenAIServer() as running:
        yield running


def served(server: OpenAIServer, **settings: Any) -> LLM:
    return LLM("openai/test-model", api_base=server.base_url, api_key=API_KEY, **settings)


def test_calls_are_recorded_with_tokens_cost_and_latency() -> None:
    llm = LLM(SIMULATED)
    response = llm(HELLO)
    text = llm.complete([{"role": "user", "content": "Something longer than hello."}])
    assert response.choices[0].message.content
    calls = llm.take_calls()
    assert [call.response for call in calls] == [response.choices[0].message.content, text]
    for call in calls:
        assert call.model == SIMULATED and call.error is None
        assert call.prompt_tokens >= 1 and call.completion_tokens >= 1
        expected = (
            call.prompt_tokens * simulated.INPUT_COST_PER_TOKEN
            + call.completion_tokens * simulated.OUTPUT_COST_PER_TOKEN
        )
        assert call.cost_usd == pytest.approx(expected)
        assert call.latency_s >= 0.0
    assert calls[0].messages == HELLO
    assert json.loads(json.dumps(calls[0].to_dict())) == calls[0].to_dict()


def test_take_calls_clears() -> None:
    llm = LLM(SIMULATED)
    llm(HELLO)
    assert len(llm.take_calls()) == 1
    assert llm.take_calls() == []


def test_with_options_shares_the_call_list() -> None:
    base = LLM(SIMULATED, temperature=0.2, simulated_seed=3)
    hot = base.with_options(temperature=1.5)
    assert hot.settings()["temperature"] == 1.5
    assert hot.settings()["simulated_seed"] == 3
    assert base.settings()["temperature"] == 0.2
    hot(HELLO)
    base(HELLO)
    assert len(base.take_calls()) == 2
    assert hot.take_calls() == []


def test_is_truthy_so_optoprime_keeps_it() -> None:
    llm = LLM(SIMULATED)
    assert bool(llm)
    assert OptoPrime([], llm=llm).llm is llm


def test_settings_are_json_and_leave_out_secrets() -> None:
    llm = LLM(
        "openai/test-model",
        temperature=0.5,
        max_tokens=100,
        api_key=API_KEY,
        azure_ad_token="secret-token",
        Client_Secret="x",
        extra_headers={"Authorization": "Bearer abc", "X-Trace": "1"},
        max_completion_tokens=50,
        api_base="http://127.0.0.1:1/v1",
    )
    settings = llm.settings()
    assert settings == {
        "model": "openai/test-model",
        "temperature": 0.5,
        "max_tokens": 100,
        "num_retries": 3,
        "timeout": 120.0,
        "cache": False,
        "extra_headers": {"X-Trace": "1"},
        "max_completion_tokens": 50,
        "api_base": "http://127.0.0.1:1/v1",
    }
    text = json.dumps(settings) + repr(llm)
    for secret in (API_KEY, "secret-token", "Bearer abc"):
        assert secret not in text


def test_settings_survive_pickling() -> None:
    llm = LLM(SIMULATED, simulated_noise=0.1)
    copy = pickle.loads(pickle.dumps(llm))
    assert copy.settings() == llm.settings()
    copy(HELLO)
    assert len(copy.take_calls()) == 1


@pytest.mark.parametrize(
    ("model", "settings", "message"),
    [
        ("", {}, "model must be a non-empty str"),
        (3, {}, "model must be a non-empty str"),
        ("not-a-known-model", {}, "names no provider"),
        ("simulated/oracle", {}, "Unknown simulated model"),
        (SIMULATED, {"temperature": 2.5}, "temperature must be a number in [0, 2]"),
        (SIMULATED, {"temperature": -0.1}, "temperature"),
        (SIMULATED, {"max_tokens": 0}, "max_tokens must be a positive int"),
        (SIMULATED, {"max_tokens": 1.5}, "max_tokens"),
        (SIMULATED, {"num_retries": -1}, "num_retries must be an int >= 0"),
        (SIMULATED, {"timeout": 0}, "timeout must be a number > 0"),
        (SIMULATED, {"cache": "yes"}, "cache must be a bool"),
        (SIMULATED, {"simulated_noise": 1.5}, "simulated_noise must be a number in [0, 1]"),
        (SIMULATED, {"simulated_nosie": 0.1}, "Unknown simulated model option"),
    ],
)
def test_invalid_settings_are_rejected(model: Any, settings: dict, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message.replace("[", r"\[").replace("]", r"\]")):
        LLM(model, **settings)


def test_known_model_without_provider_prefix_is_accepted() -> None:
    assert LLM("gpt-4o-mini").model == "gpt-4o-mini"


def test_per_call_kwargs_override_the_constructor(server: OpenAIServer) -> None:
    server.script(Reply.ok("fine", prompt_tokens=11, completion_tokens=7))
    llm = served(server, temperature=0.3, max_tokens=64, num_retries=0)
    assert llm.complete(HELLO, temperature=0.9) == "fine"
    request = server.requests[-1]
    assert request["temperature"] == 0.9
    assert request["max_tokens"] == 64
    assert request["messages"] == HELLO
    assert server.request_headers[-1]["authorization"] == f"Bearer {API_KEY}"
    (call,) = llm.take_calls()
    assert (call.prompt_tokens, call.completion_tokens) == (11, 7)
    assert call.cost_usd is None  # litellm has no price for openai/test-model


def test_optoprime_arguments_pass_through(server: OpenAIServer) -> None:
    llm = served(server, num_retries=0)
    llm(HELLO, response_format={"type": "json_object"}, max_tokens=4096)
    assert server.requests[-1]["response_format"] == {"type": "json_object"}
    assert server.requests[-1]["max_tokens"] == 4096


def test_a_server_error_is_retried(server: OpenAIServer) -> None:
    server.script(Reply.error(500), Reply.ok("recovered"))
    llm = served(server, num_retries=2)
    assert llm.complete(HELLO) == "recovered"
    assert len(server.requests) == 2
    (call,) = llm.take_calls()
    assert call.error is None and call.response == "recovered"


def test_a_rate_limit_is_retried_after_the_servers_delay(server: OpenAIServer) -> None:
    server.script(Reply.error(429, headers={"Retry-After": "0.3"}), Reply.ok("after the wait"))
    llm = served(server, num_retries=1)
    start = time.perf_counter()
    assert llm.complete(HELLO) == "after the wait"
    assert time.perf_counter() - start >= 0.3
    assert len(server.requests) == 2


def test_persistent_errors_raise_llm_error_after_the_retries(server: OpenAIServer) -> None:
    server.default = Reply.error(500, headers=FAST_RETRY)
    llm = served(server, num_retries=2)
    with pytest.raises(LLMError, match=r"'openai/test-model' failed \(num_retries=2\)"):
        llm(HELLO)
    assert len(server.requests) >= 3  # the first try and at least num_retries retries
    (call,) = llm.take_calls()
    assert call.response is None and call.cost_usd is None
    assert call.error is not None and "500" in call.error
    assert API_KEY not in json.dumps(call.to_dict())


def test_no_retries_means_one_request(server: OpenAIServer) -> None:
    server.default = Reply.error(503)
    llm = served(server, num_retries=0)
    with pytest.raises(LLMError):
        llm(HELLO)
    assert len(server.requests) == 1


@pytest.mark.parametrize("num_retries", [0, 1])
def test_a_malformed_body_raises_llm_error(server: OpenAIServer, num_retries: int) -> None:
    server.default = Reply.malformed()
    llm = served(server, num_retries=num_retries)
    with pytest.raises(LLMError, match="openai/test-model") as caught:
        llm(HELLO)
    assert API_KEY not in str(caught.value)
    (call,) = llm.take_calls()
    assert call.error is not None


def test_a_slow_answer_times_out(server: OpenAIServer) -> None:
    server.script(Reply.slow("too late", delay_s=10.0))
    llm = served(server, num_retries=0, timeout=0.3)
    start = time.perf_counter()
    with pytest.raises(LLMError, match="(?i)timeout|timed out"):
        llm(HELLO)
    assert time.perf_counter() - start < 5.0
    (call,) = llm.take_calls()
    assert call.error is not None and call.latency_s >= 0.3


def test_api_key_never_appears_in_settings_or_calls(server: OpenAIServer) -> None:
    server.script(Reply.ok("ok"), Reply.error(400))
    llm = served(server, num_retries=0)
    llm(HELLO)
    with pytest.raises(LLMError):
        llm(HELLO)
    calls = llm.take_calls()
    assert len(calls) == 2
    dumped = json.dumps([call.to_dict() for call in calls]) + json.dumps(llm.settings())
    assert API_KEY not in dumped
    assert all(isinstance(call, LLMCall) for call in calls)
