"""Test doubles and fixtures for trace_optuna and for users' own tests.

* :mod:`trace_optuna.testing.storages`: a fresh database per test session on real PostgreSQL,
  MySQL/MariaDB and Redis servers (InMemoryStorage accepts what real storages reject), found
  through environment variables; re-exported here.
* :mod:`trace_optuna.testing.simulated`: the simulated model ``simulated/feedback-follower``,
  an offline litellm provider that follows feedback by rules, for demos, tests and
  benchmarks. It is not a language model. Importing this package does not import it (nor
  litellm); ``LLM("simulated/...")`` does.
"""

from __future__ import annotations

from trace_optuna.testing.storages import STORAGE_KINDS
from trace_optuna.testing.storages import ServerDatabase
from trace_optuna.testing.storages import ServerUnavailable
from trace_optuna.testing.storages import databases_required
from trace_optuna.testing.storages import server_url

__all__ = [
    "STORAGE_KINDS",
    "ServerDatabase",
    "ServerUnavailable",
    "databases_required",
    "server_url",
]
