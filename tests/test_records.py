from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

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


def test_newer_schema_is_refused_with_a_clear_error() -> None:
    with pytest.raises(RecordError, match="schema 99"):
        records.check_schema({records.SCHEMA: 99}, "Trial#3")
