from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

import trace_optuna as to
from trace_optuna import demo
from trace_optuna import records
from trace_optuna.exceptions import RecordError
from trace_optuna.storage import resolve_storage

DATA = Path(__file__).parent / "data"

LARGE_VALUES = {
    "ascii": "x" * 150_000,
    # Optuna escapes non-ASCII: 6 bytes a character, 12 for characters outside the BMP.
    "accented": "é" * 25_000,
    "emoji": "a🙂" * 9_000,
    "json": {"rows": [{"text": "ü" * 50, "n": i} for i in range(3_000)]},
    "small": "short",
}


@pytest.mark.parametrize("name", sorted(LARGE_VALUES))
def test_encode_keeps_every_stored_value_under_the_limit(name: str) -> None:
    value = LARGE_VALUES[name]
    stored = records.encode("trace:value:p", value)
    for stored_value in stored.values():
        assert len(json.dumps(stored_value)) <= records.MAX_ATTR_BYTES
    assert records.decode(stored, "trace:value:p") == value
    assert (len(stored) == 1) == (name == "small")


def test_decode_of_a_partial_write_sees_nothing_rather_than_a_truncated_value() -> None:
    stored = records.encode("k", "x" * 200_000)
    partial = dict(stored)
    del partial["k"]  # the key is written last; without it the value is not there yet
    assert records.decode(partial, "k") is None
    broken = dict(stored)
    del broken["k:chunk:2"]
    with pytest.raises(RecordError, match="chunks are broken"):
        records.decode(broken, "k")


def test_large_values_round_trip_through_the_real_storage(storage_url: str) -> None:
    """MySQL/MariaDB cap a value at 65,535 bytes; chunking must keep every storage intact."""
    study = optuna.create_study(storage=resolve_storage(storage_url))
    trial = study.ask()
    records.write(trial.set_user_attr, LARGE_VALUES)
    study.tell(trial, 1.0)

    reread = optuna.load_study(
        study_name=study.study_name, storage=resolve_storage(storage_url)
    ).trials[0]
    for name, value in LARGE_VALUES.items():
        assert records.decode(reread.user_attrs, name) == value


def test_frozen_schema_1_record_still_decodes() -> None:
    """A record stored by schema 1, frozen as JSON; later schemas must keep reading it."""
    sample = json.loads((DATA / "record_v1.json").read_text())
    trial = optuna.trial.create_trial(
        value=sample["value"],
        params={"strategy": "optoprime"},
        distributions={"strategy": optuna.distributions.CategoricalDistribution(["optoprime"])},
        user_attrs=sample["user_attrs"],
    )
    trial.number = 1
    record = records.build_record(trial, {"instructions": "Mention the order number."})
    assert record.schema == 1
    assert record.strategy == "optoprime"
    assert record.parents == [0]
    assert record.feedback == "The reply is perfect."
    assert record.parent_feedback.startswith("The reply should mention")
    assert record.improvement == 0.5
    assert record.diff.startswith("--- instructions (parent)")
    assert record.llm["calls"] == 1 and record.llm_calls[0]["response"].startswith("{")
    assert record.worker["pid"] == 4242
    assert record.params == {"strategy": "optoprime"}


def test_frozen_schema_2_record_decodes_and_reads_call_texts_by_their_schema_1_names() -> None:
    """Schema 2 packs each LLM call's three texts into ``trace:llm_calls``."""
    sample = json.loads((DATA / "record_v2.json").read_text())
    attrs = sample["user_attrs"]
    trial = optuna.trial.create_trial(value=sample["value"], user_attrs=attrs)
    trial.number = 1
    record = records.build_record(trial, {"instructions": "Mention the order number."})
    assert record.schema == 2
    assert [call["response"][:8] for call in record.llm_calls] == ["[error] ", '{"reason']
    assert record.llm_calls[1]["user"].startswith("#Variables")
    assert record.diff.startswith("--- instructions (parent)")
    assert records.decode(attrs, records.llm_call_key(1, "response")).startswith("{")
    assert records.decode(attrs, records.llm_call_key(2, "response"), "none") == "none"
    v1 = json.loads((DATA / "record_v1.json").read_text())["user_attrs"]
    assert records.decode(v1, records.llm_call_key(0, "response")).startswith("{")
    assert records.llm_calls(v1) == [
        {part: v1[records.llm_call_key(0, part)] for part in records.LLM_PARTS}
    ]


def test_a_trial_stores_its_llm_texts_in_one_attribute_however_many_calls(
    storage_url: str, study_name: str
) -> None:
    study = to.create_study(
        study_name=study_name,
        storage=storage_url,
        agent=demo.make_agent,
        evaluate=demo.evaluate,
        llm=to.LLM(demo.DEMO_LLM, simulated_seed=0),
        strategies=[to.strategies.EvolutionaryStrategy(mu=1, offspring=3)],
        seed=0,
        figure_interval=None,
    )
    study.optimize(n_trials=2)
    step = study.trials[1]
    assert step.user_attrs[records.LLM]["calls"] == 3
    llm_keys = sorted(key for key in step.user_attrs if key.startswith("trace:llm"))
    assert llm_keys == [records.LLM, records.LLM_CALLS]  # not three attributes per call
    calls = study.record(1).llm_calls
    assert len(calls) == 3
    assert all(len(call["system"]) > 1_000 and call["user"] and call["response"] for call in calls)


def test_newer_schema_is_refused_with_a_clear_error() -> None:
    with pytest.raises(RecordError, match="schema 99"):
        records.check_schema({records.SCHEMA: 99}, "Trial#3")


def _stored(storage_url: str, study_name: str) -> list[tuple]:
    """Everything a study's trials hold, to check that a refused read changed nothing."""
    study = optuna.load_study(study_name=study_name, storage=resolve_storage(storage_url))
    return [
        (t.number, t.state, t.values, t.params, t.user_attrs, t.system_attrs) for t in study.trials
    ]


def test_record_of_a_plain_optuna_trial_says_trace_optuna_did_not_write_it(
    storage_url: str, study_name: str
) -> None:
    plain = optuna.create_study(study_name=study_name, storage=resolve_storage(storage_url))
    plain.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=3)
    before = _stored(storage_url, study_name)
    study = to.load_study(study_name=study_name, storage=storage_url)  # for reading
    with pytest.raises(RecordError) as caught:
        study.record(0)
    message = str(caught.value)
    assert "Trial#0 (COMPLETE) holds no trace_optuna record" in message
    assert "not written by trace_optuna" in message
    with pytest.raises(RecordError, match=r"has no Trial#-1: its trials are numbered 0 to 2"):
        study.record(-1)
    with pytest.raises(RecordError, match=r"has no Trial#3: its trials are numbered 0 to 2"):
        study.record(3)
    assert _stored(storage_url, study_name) == before


def test_record_refuses_a_trial_number_the_study_does_not_hold(
    storage_url: str, study_name: str
) -> None:
    """``record(-1)`` used to return the last trial, as a Python list would."""
    study = to.create_study(
        study_name=study_name,
        storage=storage_url,
        agent=demo.make_agent,
        evaluate=demo.evaluate,
        llm=to.LLM(demo.DEMO_LLM, simulated_seed=0),
        seed=0,
        figure_interval=None,
    )
    study.optimize(n_trials=2)
    before = _stored(storage_url, study_name)
    assert study.record(1).number == 1
    for number in (-1, -2, 2, 10**6):
        with pytest.raises(RecordError) as caught:
            study.record(number)
        assert f"Study '{study_name}' has no Trial#{number}" in str(caught.value)
        assert "its trials are numbered 0 to 1" in str(caught.value)
    for number in ("1", 1.0, True, None):
        with pytest.raises(to.ConfigurationError, match=r"A trial number must be an int; got"):
            study.record(number)  # type: ignore[arg-type]
    assert _stored(storage_url, study_name) == before


def test_a_study_without_trials_says_so(sqlite_url: str, study_name: str) -> None:
    optuna.create_study(study_name=study_name, storage=sqlite_url)
    study = to.load_study(
        study_name=study_name,
        storage=sqlite_url,
        agent=demo.make_agent,
        evaluate=demo.evaluate,
        llm=demo.DEMO_LLM,
        figure_interval=None,
    )
    with pytest.raises(RecordError, match=r"has no Trial#0: it holds no trial yet"):
        study.record(0)


def test_a_running_trace_trial_has_a_record_before_its_snapshot() -> None:
    """``trace:worker`` is the first thing a trial writes: that is already a record."""
    trial = optuna.trial.create_trial(
        state=optuna.trial.TrialState.RUNNING,
        user_attrs={records.WORKER: {"host": "worker-1", "pid": 1}},
    )
    record = records.build_record(trial, {})
    assert record.state == "RUNNING" and record.worker["pid"] == 1 and record.snapshot == {}
