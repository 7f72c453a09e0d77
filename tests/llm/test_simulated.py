"""The simulated model, driven by Trace's real OptoPrime through litellm (nothing mocked)."""

from __future__ import annotations

import json
import random
from typing import Any

from opto import trace
from opto.optimizers import OptoPrime
import pytest

from trace_optuna.llm import LLM
from trace_optuna.testing import simulated

MODEL = "simulated/feedback-follower"


@pytest.fixture(autouse=True)
def _fresh_simulation() -> None:
    simulated.reset_simulated_model()


@trace.bundle()
def combine(*values: Any) -> str:
    """Joins the values into one text."""
    return " | ".join(str(value) for value in values)


@trace.bundle(trainable=True)
def shout(text):
    """Turns the text into a greeting."""
    return "Hello " + text.upper()


def optimizer_step(
    parameters: list[trace.Node], feedback: str, output: trace.Node | None = None, **options: Any
) -> tuple[OptoPrime, str]:
    """One real OptoPrime step with the simulated model; returns the optimizer and the answer."""
    llm = LLM(MODEL, **options)
    optimizer = OptoPrime(parameters, llm=llm)
    if output is None:
        output = combine(*parameters)
    optimizer.zero_feedback()
    optimizer.backward(output, feedback)
    optimizer.step()
    calls = llm.take_calls()
    assert len(calls) == 1 and calls[0].error is None
    return optimizer, calls[0].response or ""


def number(value: float, name: str) -> trace.Node:
    return trace.node(value, name=name, trainable=True)


@pytest.mark.parametrize(
    ("feedback", "moves_up"),
    [
        ("The count is too small.", True),
        ("Please increase it.", True),
        ("It should be larger.", True),
        ("We need more.", True),
        ("The result should be higher.", True),
        ("The count is too large.", False),
        ("Make it smaller.", False),
        ("Decrease it.", False),
        ("Use less.", False),
        ("It should be lower.", False),
    ],
)
def test_number_moves_in_the_direction_the_feedback_says(feedback: str, moves_up: bool) -> None:
    count = number(10, "count")
    optimizer_step([count], feedback)
    assert (count.data > 10) if moves_up else (count.data < 10)
    assert isinstance(count.data, int)


def test_by_n_sets_the_step() -> None:
    count = number(10, "count")
    optimizer_step([count], "Increase count by 3.")
    assert count.data == 13


def test_float_moves_by_a_fraction_of_its_value() -> None:
    rate = number(0.5, "rate")
    optimizer_step([rate], "The rate is too large.")
    assert 0.0 < rate.data < 0.5
    assert isinstance(rate.data, float)


def test_memory_of_an_overshoot_bounds_the_next_move() -> None:
    # Real OptoPrime memory: 12 was "too large" before, 30 too; from 10, "too small" moves
    # halfway to the nearest of them (at temperature 0), not 50% of the value (to 15).
    rate = number(10.0, "rate")
    llm = LLM(MODEL, temperature=0.0)
    optimizer = OptoPrime([rate], llm=llm, memory_size=2)
    optimizer.memory.add(({rate.py_name: (30.0, "")}, "The rate is too large."))
    optimizer.memory.add(({rate.py_name: (12.0, "")}, "The rate is too large."))
    optimizer.zero_feedback()
    optimizer.backward(combine(rate), "The rate is too small.")
    optimizer.step()
    assert rate.data == 11.0
    assert "tried before" in (llm.take_calls()[-1].response or "")


def test_memory_pointing_the_same_way_does_not_bound() -> None:
    rate = number(10.0, "rate")
    optimizer = OptoPrime([rate], llm=LLM(MODEL, temperature=0.0), memory_size=1)
    optimizer.memory.add(({rate.py_name: (12.0, "")}, "The rate is too small."))
    optimizer.zero_feedback()
    optimizer.backward(combine(rate), "The rate is too small.")
    optimizer.step()
    assert rate.data == 15.0


def test_only_the_named_number_moves() -> None:
    max_words, min_words = number(10, "max_words"), number(10, "min_words")
    optimizer_step([max_words, min_words], "max_words should be smaller.")
    assert max_words.data < 10
    assert min_words.data == 10


def test_all_numbers_move_when_none_is_named() -> None:
    width, height = number(10, "width"), number(20, "height")
    optimizer_step([width, height], "The box is too small.")
    assert width.data > 10 and height.data > 20


def text(value: str, name: str) -> trace.Node:
    return trace.node(value, name=name, trainable=True)


def test_mention_appends_a_sentence_to_the_named_string() -> None:
    greeting, instructions = text("Hi.", "greeting"), text("Be brief.", "instructions")
    optimizer_step([greeting, instructions], 'Mention "order number" in the instructions.')
    assert instructions.data == "Be brief. Always mention order number."
    assert greeting.data == "Hi."


def test_include_without_a_name_targets_the_first_string() -> None:
    first, second = text("One.", "first"), text("Two.", "second")
    optimizer_step([first, second], 'The answer should include "tracking link".')
    assert "tracking link" in first.data
    assert second.data == "Two."


def test_add_appends_the_quoted_sentence_itself() -> None:
    prompt = text("Be brief.", "prompt")
    optimizer_step([prompt], 'Add "We are sorry for the delay" to prompt.')
    assert prompt.data == "Be brief. We are sorry for the delay."


def test_remove_deletes_the_quoted_text() -> None:
    prompt = text("Be brief. Talk about the weather. Be kind.", "prompt")
    optimizer_step([prompt], 'Remove "Talk about the weather." from prompt.')
    assert prompt.data == "Be brief. Be kind."


def test_replace_edits_a_string() -> None:
    prompt = text("Sign as Bob.", "prompt")
    optimizer_step([prompt], 'Replace "Bob" with "Alice".')
    assert prompt.data == "Sign as Alice."


def test_strings_containing_def_are_suggested() -> None:
    prompt = text("Be brief.", "prompt")
    _, response = optimizer_step([prompt], 'Add "Use the default tone" to prompt.')
    # Trace 0.1.3.8 drops str suggestions containing "def" (its black bug); the model still
    # makes them, and the core works around the bug.
    assert json.loads(response)["suggestion"] == {
        prompt.py_name: "Be brief. Use the default tone."
    }


def test_replace_edits_code_and_keeps_the_signature() -> None:
    shout.parameter._set(shout.parameter._data)  # fresh source for this test
    original = shout.parameter._data
    output = shout(trace.node("world"))
    assert output.data == "Hello WORLD"
    optimizer_step([shout.parameter], 'In shout, replace "Hello " with "Hi "', output=output)
    assert shout.parameter.data.startswith("def shout(text):")
    assert shout(trace.node("world")).data == "Hi WORLD"
    shout.parameter._set(original)


def test_noise_puts_a_bug_into_the_intended_code_and_a_repair_keeps_the_change() -> None:
    original = shout.parameter._data
    output = shout(trace.node("world"))
    optimizer_step(
        [shout.parameter], 'replace "Hello " with "Hey "', output=output, simulated_noise=1.0
    )
    assert 'raise RuntimeError("simulated bug")' in shout.parameter.data
    with pytest.raises(trace.ExecutionError) as caught:
        shout(trace.node("world"))
    exception_node = caught.value.exception_node
    optimizer_step([shout.parameter], str(exception_node.data), output=exception_node)
    assert "raise" not in shout.parameter.data
    assert shout(trace.node("world")).data == "Hey WORLD"  # the intended change survives
    shout.parameter._set(original)


@pytest.mark.parametrize(
    "feedback",
    ["The output is perfect.", "Correct!", "Nice work, nothing to say about it."],
)
def test_terminate_when_satisfied_or_no_instruction(feedback: str) -> None:
    count, prompt = number(7, "count"), text("Be brief.", "prompt")
    optimizer, response = optimizer_step([count, prompt], feedback)
    assert response == "TERMINATE"
    assert (count.data, prompt.data) == (7, "Be brief.")
    assert optimizer.log == []  # OptoPrime logs nothing when the model terminates


def test_not_correct_is_not_satisfied() -> None:
    count = number(7, "count")
    _, response = optimizer_step([count], "This is not correct: count is too small.")
    assert response != "TERMINATE"
    assert count.data > 7


# -- batched feedback: one sentence per example ----------------------------------------------


@pytest.mark.parametrize(
    "feedback",
    [
        'Example 1: correct. Example 2: wrong, the reply should mention "order number".',
        "Example 1: perfect. Example 2: count is too small.",
        'Example 1: the reply is correct. Example 2: failed. Add "Sorry." to prompt.',
    ],
)
def test_batched_feedback_with_a_passing_example_is_followed(feedback: str) -> None:
    count, prompt = number(7, "count"), text("Be brief.", "prompt")
    _, response = optimizer_step([count, prompt], feedback)
    assert response != "TERMINATE"
    assert (count.data, prompt.data) != (7, "Be brief.")


def test_an_instruction_repeated_across_examples_is_applied_once() -> None:
    body = text("return total", "body")
    edit = 'replace "total" with "total + tax"'
    optimizer_step([body], f"Example 1: {edit}. Example 2: {edit}.")
    assert body.data == "return total + tax"


def test_a_number_memory_shows_rejected_is_not_proposed_again() -> None:
    # From 1, "larger" moves an int by one, to 2; but 2 was tried from here and rejected.
    count = number(1, "count")
    optimizer = OptoPrime([count], llm=LLM(MODEL), memory_size=1)
    rejected = "Example 1: correct. Example 2: count is too small."
    optimizer.memory.add(({count.py_name: (2, "")}, rejected))
    optimizer.zero_feedback()
    optimizer.backward(combine(count), "Example 2: count is too small.")
    optimizer.step()
    assert count.data == 3


def test_no_int_is_left_between_a_value_and_its_overshoot() -> None:
    # 4 was too large, 3 is too small: there is no int between, and 4 is not proposed again.
    count, prompt = number(3, "count"), text("Be brief.", "prompt")
    optimizer = OptoPrime([count, prompt], llm=LLM(MODEL), memory_size=1)
    optimizer.memory.add(
        ({count.py_name: (4, ""), prompt.py_name: ("Be brief.", "")}, "count is too large.")
    )
    optimizer.zero_feedback()
    optimizer.backward(combine(count, prompt), 'count is too small. Add "Thanks." to prompt.')
    optimizer.step()
    assert count.data == 3 and prompt.data == "Be brief. Thanks."


def test_a_prompt_sent_again_gets_a_number_not_suggested_before() -> None:
    messages = optoprime_messages("count is too small.", value=1)
    simulated.reset_simulated_model()  # forget the call that built the messages
    llm = LLM(MODEL, temperature=1.0)
    answers = [next(iter(suggested(llm, messages).values())) for _ in range(3)]
    assert answers == [2, 3, 4]


def optoprime_messages(feedback: str, value: int = 100) -> list[dict[str, str]]:
    """The messages a real OptoPrime sends for one number parameter and ``feedback``."""
    count = number(value, "count")
    optimizer, _ = optimizer_step([count], feedback)
    return [
        {"role": "system", "content": optimizer.log[-1]["system_prompt"]},
        {"role": "user", "content": optimizer.log[-1]["user_prompt"]},
    ]


def suggested(llm: LLM, messages: list[dict[str, str]]) -> dict[str, Any]:
    return json.loads(llm.complete(messages))["suggestion"]


def test_noise_gives_wrong_suggestions_at_about_the_configured_rate() -> None:
    messages = optoprime_messages("count is too small.")
    key = "count" + messages[1]["content"].split("(int) count", 1)[1].split("=", 1)[0]
    seeds = range(400)
    wrong = sum(
        suggested(LLM(MODEL, simulated_noise=0.25, simulated_seed=seed), messages)[key] < 100
        for seed in seeds
    )
    assert 0.17 <= wrong / len(seeds) <= 0.33
    always_right = [
        suggested(LLM(MODEL, simulated_seed=seed), messages)[key] > 100 for seed in range(50)
    ]
    assert all(always_right)


def test_same_seed_same_answers_and_repeated_prompts_differ() -> None:
    messages = optoprime_messages("count is too small.")
    first = [LLM(MODEL, simulated_seed=7).complete(messages) for _ in range(5)]
    assert len(set(first)) > 1  # identical prompts sent again get new samples
    simulated.reset_simulated_model()
    again = [LLM(MODEL, simulated_seed=7).complete(messages) for _ in range(5)]
    assert again == first
    simulated.reset_simulated_model()
    other_seed = [LLM(MODEL, simulated_seed=8).complete(messages) for _ in range(5)]
    assert other_seed != first


def test_temperature_zero_makes_steps_fixed() -> None:
    messages = optoprime_messages("count is too small.")
    answers = {LLM(MODEL, temperature=0.0).complete(messages) for _ in range(5)}
    assert len(answers) == 1
    assert '": 150}' in answers.pop()  # half the value at temperature 0


def test_kwargs_reach_the_provider_through_optional_params() -> None:
    messages = optoprime_messages("count is too small.")
    llm = LLM(MODEL, simulated_noise=1.0, simulated_latency=0.05)
    assert all(value < 100 for value in suggested(llm, messages).values())
    assert llm.take_calls()[0].latency_s >= 0.05


@pytest.mark.parametrize(
    "content",
    [
        "Hello there",
        json.dumps({"candidates": [{"x": 1}, {"x": 2}], "task": "cross them over"}),
        json.dumps({"solution": {"prompt": "Be brief."}, "task": "improve this solution"}),
        '{"not json',
        "",
    ],
)
def test_other_prompts_get_a_valid_empty_answer(content: str) -> None:
    answer = json.loads(LLM(MODEL).complete([{"role": "user", "content": content}]))
    assert answer["suggestion"] == {}
    assert isinstance(answer["reasoning"], str)


def test_parse_multiline_values_until_the_next_variable_or_section() -> None:
    prompt = (
        "#Variables\n(str) notes0=line one\nline two\n(code) __code3:def f(x):\n"
        '    """Doc."""\n    return x\n(int) n0=4\n\n#Constraints\n(int) n0: n0 > 0\n\n'
        "#Feedback\nn is too small\n\n================================\n"
        "Below are some variables and their feedbacks you received in the past.\n"
    )
    problem = simulated.parse_optoprime_problem(prompt)
    assert problem is not None
    assert [(v.type_name, v.py_name, v.value) for v in problem.variables] == [
        ("str", "notes0", "line one\nline two"),
        ("code", "__code3", 'def f(x):\n    """Doc."""\n    return x'),
        ("int", "n0", 4),
    ]
    assert problem.feedback == "n is too small"


def test_registration_is_idempotent() -> None:
    import litellm

    handler = simulated.register_simulated_provider()
    assert simulated.register_simulated_provider() is handler
    providers = [item["provider"] for item in litellm.custom_provider_map]
    assert providers.count("simulated") == 1


# -- STOP, crossover and judge prompts --------------------------------------------------------


def seed_improver() -> dict[str, Any]:
    """The namespace of STOP's seed improver: its own ``make_prompt`` builds the prompts."""
    from trace_optuna.strategies.stop import SEED_IMPROVER

    namespace: dict[str, Any] = {}
    exec(compile(SEED_IMPROVER, "<seed improver>", "exec"), namespace)
    return namespace


def improve_solution(
    solution: dict[str, Any], feedback: str, **options: Any
) -> tuple[str, dict[str, Any]]:
    """Send STOP's "improve this solution" prompt; return the idea and the solution."""
    prompt = seed_improver()["make_prompt"](solution, feedback)
    answer = json.loads(LLM(MODEL, **options).complete([{"role": "user", "content": prompt}]))
    assert set(answer) == {"idea", "solution"} and set(answer["solution"]) == set(solution)
    return answer["idea"], answer["solution"]


CODE = 'def reply(self, text):\n    raise ValueError("not yet")\n    return text\n'


@pytest.mark.parametrize(
    ("feedback", "expected"),
    [
        ("count is too small; increase it by 3.", {"count": 10}),
        ("The count should be lower by 2.", {"count": 5}),
        (
            'Include "order number" in prompt.',
            {"prompt": "Be brief. Always mention order number."},
        ),
        ('Add "We are sorry." to prompt.', {"prompt": "Be brief. We are sorry."}),
        ('Replace "brief" with "kind".', {"prompt": "Be kind."}),
        ('Remove "Be " from prompt.', {"prompt": "brief."}),
        (
            "reply raised ValueError: not yet",
            {"reply": "def reply(self, text):\n    return text\n"},
        ),
    ],
)
def test_stop_solutions_follow_the_feedback_grammar(feedback: str, expected: dict) -> None:
    solution = {"count": 7, "prompt": "Be brief.", "reply": CODE, "flag": True}
    idea, improved = improve_solution(solution, feedback)
    assert improved == {**solution, **expected}
    assert idea.startswith("Follow the feedback")


def test_stop_solution_numbers_move_by_a_random_step_without_by() -> None:
    steps = {improve_solution({"n": 100}, "n is too small.")[1]["n"] for _ in range(5)}
    assert all(value > 100 for value in steps) and len(steps) > 1
    fixed = {improve_solution({"n": 100}, "n is too small.", temperature=0.0)[1]["n"]}
    assert fixed == {150}


def test_a_correct_stop_solution_comes_back_unchanged() -> None:
    solution = {"count": 7, "prompt": "Be brief."}
    idea, improved = improve_solution(solution, "The reply is perfect.")
    assert improved == solution and "keep the solution" in idea


def test_a_stop_solution_correct_on_one_example_only_is_improved() -> None:
    solution = {"count": 7, "prompt": "Be brief."}
    _, improved = improve_solution(solution, "Example 1: perfect. Example 2: count is too small.")
    assert improved["count"] > 7


def test_stop_solution_noise_gives_wrong_edits() -> None:
    wrong = [
        improve_solution({"n": 100}, "n is too small.", simulated_noise=1.0, simulated_seed=s)[1]
        for s in range(5)
    ]
    assert all(solution["n"] < 100 for solution in wrong)


def improve_improver(source: str, **options: Any) -> tuple[str, str]:
    """Send STOP's "improve this improver" prompt; return the answer and its program."""
    namespace = seed_improver()
    prompt = namespace["make_prompt"](source, "Improve the improver.")
    answer = LLM(MODEL, **options).complete([{"role": "user", "content": prompt}])
    program = namespace["parse"](answer, source)
    assert isinstance(program, str)
    return answer, program


def test_the_improver_prompt_gets_plausible_rewrites() -> None:
    from trace_optuna.strategies.stop import SEED_IMPROVER
    from trace_optuna.strategies.stop import check_improver_source

    ideas = set()
    for seed in range(12):
        answer, program = improve_improver(SEED_IMPROVER, simulated_seed=seed)
        assert check_improver_source(program) is None and program != SEED_IMPROVER
        assert answer.startswith("Idea: ") and "(noise)" not in answer
        ideas.add(answer.split("\n", 1)[0].split(" ")[1])
    assert ideas == {"Sample"}  # another count, another temperature, or a refinement round
    answers = {improve_improver(SEED_IMPROVER, simulated_seed=s)[0] for s in range(12)}
    assert any("refining" in a for a in answers) and any("temperature" in a for a in answers)
    assert any("candidates instead" in a for a in answers)


def test_a_refinement_round_spends_the_rest_of_the_budget() -> None:
    from trace_optuna.strategies import sandbox
    from trace_optuna.strategies.stop import SEED_IMPROVER

    refined = next(
        program
        for seed in range(50)
        for answer, program in [improve_improver(SEED_IMPROVER, simulated_seed=seed)]
        if "refining" in answer
    )
    llm = LLM(MODEL)
    run = sandbox.run_improver(
        refined,
        {"n": 10},
        "n is too small.",
        4,
        llm=lambda messages, temperature: llm.complete(messages, temperature=temperature),
        utility=lambda solution: float(solution["n"]),
        limits=sandbox.SandboxLimits(timeout_s=10),
    )
    assert run.llm_calls == 4 and run.solution["n"] > 10


def test_improver_noise_gives_worse_or_broken_rewrites() -> None:
    from trace_optuna.strategies.stop import SEED_IMPROVER
    from trace_optuna.strategies.stop import check_improver_source

    ideas = set()
    for seed in range(30):
        answer, program = improve_improver(SEED_IMPROVER, simulated_noise=1.0, simulated_seed=seed)
        assert "(noise)" in answer
        ideas.add(answer.split("\n", 1)[0])
        if "shorter program" in answer:
            assert check_improver_source(program) is not None  # does not compile
    assert len(ideas) == 4  # lazy, raising, over budget, broken


def test_improver_rewrites_are_deterministic_for_a_seed() -> None:
    from trace_optuna.strategies.stop import SEED_IMPROVER

    first = [improve_improver(SEED_IMPROVER, simulated_seed=3)[0] for _ in range(3)]
    simulated.reset_simulated_model()
    assert [improve_improver(SEED_IMPROVER, simulated_seed=3)[0] for _ in range(3)] == first


def crossover(parents: list[dict[str, Any]], direction: str = "maximize", **options: Any) -> dict:
    """Send the genetic strategy's crossover prompt (the fixed spec); return the answer."""
    payload = json.dumps({"direction": direction, "parents": parents})
    user = f"#Crossover\nCombine the parents into one child.\n\n#Parents\n{payload}\n"
    messages = [
        {"role": "system", "content": "You breed solutions."},
        {"role": "user", "content": user},
    ]
    answer = json.loads(LLM(MODEL, **options).complete(messages))
    assert set(answer) == {"reasoning", "child"} and isinstance(answer["reasoning"], str)
    return answer["child"]


PARENTS = [
    {
        "trial": 3,
        "score": 0.4,
        "feedback": "Mention the tracking link.",
        "values": {
            "prompt": "Be brief. Mention the order number.",
            "max_words": 30,
            "format": "def format(draft):\n    return draft\n",
            "tone": "friendly",
        },
    },
    {
        "trial": 5,
        "score": 0.6,
        "feedback": "Mention the order number.",
        "values": {
            "prompt": "Be brief. Offer a tracking link! Apologise.",
            "max_words": 40,
            "format": "def format(draft):\n    return draft + '.'\n",
            "tone": "friendly",
        },
    },
]


def test_crossover_merges_text_and_takes_the_better_parents_numbers_and_code() -> None:
    child = crossover(PARENTS)
    assert child == {
        "prompt": "Be brief. Offer a tracking link! Apologise. Mention the order number.",
        "max_words": 40,
        "format": "def format(draft):\n    return draft + '.'\n",
        "tone": "friendly",
    }


def test_crossover_follows_the_direction() -> None:
    child = crossover(PARENTS, direction="minimize")
    assert child["max_words"] == 30 and child["format"] == PARENTS[0]["values"]["format"]
    assert (
        child["prompt"] == "Be brief. Mention the order number. Offer a tracking link! Apologise."
    )


def test_crossover_noise_takes_a_worse_parents_value() -> None:
    children = [crossover(PARENTS, simulated_noise=1.0, simulated_seed=s) for s in range(10)]
    clean = crossover(PARENTS)
    assert all(child != clean for child in children)


def test_judge_prefers_correct_then_fewer_problems_then_a() -> None:
    from trace_optuna.strategies.base import RunResult
    from trace_optuna.strategies.judge import Selector

    judge = Selector("llm", LLM(MODEL))

    def result(feedback: str) -> RunResult:
        return RunResult(score=0.0, feedback=feedback, output="some output")

    perfect, one, two = (
        result("The reply is perfect."),
        result("Too short."),
        result("Too short. Rude."),
    )
    assert judge.judge(one, perfect) == "B" and judge.judge(perfect, one) == "A"
    assert judge.judge(two, one) == "B" and judge.judge(one, two) == "A"
    assert judge.judge(result("Too long."), result("Too short, and rude.")) == "A"  # shorter
    assert judge.judge(one, result("Too short.")) == "A"  # a tie goes to A
    not_correct = result("This is not correct.")
    assert judge.judge(not_correct, perfect) == "B"
    candidates = [({}, two), ({}, one), ({}, perfect), ({}, one)]
    assert judge.select(candidates, lambda a, b: a > b) == 2


def test_judge_answers_in_its_json_format_and_noise_flips_the_verdict() -> None:
    from trace_optuna.strategies.judge import JUDGE_MARKER
    from trace_optuna.strategies.judge import JUDGE_SYSTEM_PROMPT

    user = (
        f"{JUDGE_MARKER}\n\nCandidate A output:\nHi\nFeedback on A:\nToo short.\n\n"
        "Candidate B output:\nHello there\nFeedback on B:\nThe reply is perfect.\n\n"
        "Which candidate is better? Answer with the JSON format above."
    )
    messages = [
        {"role": "system", "content": JUDGE_SYSTEM_PROMPT},
        {"role": "user", "content": user},
    ]
    answer = json.loads(LLM(MODEL).complete(messages))
    assert answer["winner"] == "B" and "correct" in answer["reasoning"]
    flipped = json.loads(LLM(MODEL, simulated_noise=1.0).complete(messages))
    assert flipped["winner"] == "A"


# -- the prompt markers it recognises are the ones their writers use ---------------------------


def test_optoprime_sections_are_the_ones_trace_writes() -> None:
    from trace_optuna.testing.simulated._optoprime import SECTION_HEADERS

    assert {f"#{header}" for header in SECTION_HEADERS} == set(
        OptoPrime.default_prompt_symbols.values()
    )


def test_optoprime_memory_line_is_the_one_trace_writes() -> None:
    from trace_optuna.testing.simulated._optoprime import _MEMORY_START

    rate = number(12, "rate")
    optimizer = OptoPrime([rate], llm=LLM(MODEL), memory_size=1)
    for feedback in ("rate is too large.", "rate is too small."):
        optimizer.zero_feedback()
        optimizer.backward(combine(rate), feedback)
        optimizer.step()
    assert _MEMORY_START in optimizer.log[-1]["user_prompt"]


@pytest.mark.parametrize("solution", [{"count": 7}, "def improve(s, f, u, l, b):\n    return s\n"])
def test_stop_markers_are_the_section_lines_the_seed_improver_writes(solution: Any) -> None:
    from trace_optuna.strategies import stop

    prompt = seed_improver()["make_prompt"](solution, "count is too small.")
    lines = [line for line in prompt.split("\n") if line.startswith("#")]
    body = stop.SOLUTION_SECTION if isinstance(solution, dict) else stop.PROGRAM_SECTION
    assert lines == [stop.IMPROVE_MARKER, stop.FEEDBACK_SECTION, body, stop.ANSWER_SECTION]


def test_a_judge_prompt_is_recognised_by_the_judges_own_constants() -> None:
    from trace_optuna.strategies import judge
    from trace_optuna.testing.simulated import SimulatedOptions
    from trace_optuna.testing.simulated import answer_judge

    def part(label: str, output: str, feedback: str) -> str:
        return (
            f"{judge.CANDIDATE_OUTPUT.format(label=label)}\n{output}\n"
            f"{judge.CANDIDATE_FEEDBACK.format(label=label)}\n{feedback}"
        )

    prompt = "\n\n".join(
        [
            judge.JUDGE_MARKER,
            part("A", "Hi", "Too short."),
            part("B", "Hello there", "The reply is perfect."),
            judge.JUDGE_QUESTION,
        ]
    )
    answer = answer_judge(prompt, random.Random(0), SimulatedOptions(), None)
    assert answer is not None and json.loads(answer)["winner"] == "B"
    assert (
        answer_judge(
            prompt.replace(judge.JUDGE_MARKER, "#Other"),
            random.Random(0),
            SimulatedOptions(),
            None,
        )
        is None
    )
