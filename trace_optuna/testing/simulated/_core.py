"""What every part of the simulated model shares: its name, made-up prices, options, the
answerer signature, token counting and a few text helpers.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
import dataclasses
import json
import math
import random
import re
from typing import Any

from trace_optuna.exceptions import ConfigurationError

PROVIDER = "simulated"
"""The litellm provider name: model strings look like ``simulated/<model>``."""

MODELS = ("feedback-follower",)
"""The simulated models there are."""

INPUT_COST_PER_TOKEN = 0.15e-6
"""Made-up price per input token (USD): $0.15 per million."""

OUTPUT_COST_PER_TOKEN = 0.60e-6
"""Made-up price per output token (USD): $0.60 per million."""

OPTION_PREFIX = "simulated_"


@dataclasses.dataclass(frozen=True)
class SimulatedOptions:
    """The knobs of the simulated model (see the module docstring).

    Args:
        noise: Probability in [0, 1] of a wrong or useless suggestion.
        seed: Random seed.
        latency: Seconds to sleep per call, >= 0.
    """

    noise: float = 0.0
    seed: int = 0
    latency: float = 0.0

    def __post_init__(self) -> None:
        if not_number(self.noise) or not 0.0 <= self.noise <= 1.0:
            raise ConfigurationError(
                f"simulated_noise must be a number in [0, 1], got {self.noise!r}."
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigurationError(f"simulated_seed must be an int, got {self.seed!r}.")
        if not_number(self.latency) or not self.latency >= 0.0:
            raise ConfigurationError(
                f"simulated_latency must be a number >= 0 (seconds), got {self.latency!r}."
            )

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> SimulatedOptions:
        """Read ``simulated_*`` entries from completion keyword arguments.

        Raises:
            ConfigurationError: On an unknown ``simulated_*`` name or a bad value.
        """
        known = {field.name for field in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for key, value in params.items():
            if not key.startswith(OPTION_PREFIX):
                continue
            name = key[len(OPTION_PREFIX) :]
            if name not in known:
                valid = ", ".join(OPTION_PREFIX + n for n in sorted(known))
                raise ConfigurationError(
                    f"Unknown simulated model option {key!r}; valid options are {valid}."
                )
            values[name] = value
        return cls(**values)


def not_number(value: object) -> bool:
    return isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value)


Tried = Mapping[str, Sequence[Any]]
"""What the model already suggested for one prompt: ``{variable name: values}``, oldest first."""

Answerer = Callable[[str, random.Random, SimulatedOptions, float | None, Tried | None], str | None]
"""``answerer(prompt, rng, options, temperature, tried)``: the answer to a prompt shape it
recognises, or None for any other prompt (so the next answerer is asked). ``tried``: the values
already suggested for this same prompt in earlier calls (:data:`Tried`; None or empty for none),
which a prompt sent again means were not kept."""


def approximate_tokens(text: str) -> int:
    """Roughly ``len(text) / 4``, at least 1: the simulated model's token count."""
    return max(1, math.ceil(len(text) / 4))


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def sentences(text: str) -> list[str]:
    return [part.strip() for part in _SENTENCE_END.split(text.strip()) if part.strip()]


def append_sentence(text: str, sentence: str) -> str:
    return f"{text.rstrip()} {sentence}" if text.strip() else sentence


def is_code(value: Any) -> bool:
    return isinstance(value, str) and value.lstrip().startswith("def ")


def first_json_object(text: str) -> Any:
    start = text.find("{")
    if start < 0:
        raise ValueError("no JSON object")
    return json.JSONDecoder().raw_decode(text[start:])[0]


def marker_lines(*markers: str) -> re.Pattern[str]:
    """A pattern matching a line that holds one of ``markers`` alone (trailing blanks allowed)."""
    return re.compile(r"(?m)^(?:" + "|".join(re.escape(m) for m in markers) + r")[ \t]*$")
