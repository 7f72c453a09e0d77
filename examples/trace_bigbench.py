"""Trace's BigBench-Hard ``Predict`` program, optimized with trace_optuna over a list of examples.

Ported from Microsoft Trace, ``examples/bbh/run_prompt_bigbench_trace.py``
(github.com/microsoft/Trace at 8190d032e43ffe18943a8cad9ea9ee99e43d6773, last changed in
ea4f19fe3a10d061853fa40199ad0d168f82a4e1; AgentOpt/OpenTrace at
49d72cb2ed87e16c8302c43a01ef3b85161ab093 has the same program). ``Predict`` has one trainable
prompt (``prompt_template``) and the code of two trainable methods (``create_prompt``,
``extract_answer``); each trial scores it on a list of questions.

    python examples/trace_bigbench.py --storage sqlite:///bigbench.db --trials 4
    python examples/trace_bigbench.py --storage postgresql://postgres@127.0.0.1:5432/test
    python examples/trace_bigbench.py --dataset --feedback directive --trials 6   # minibatches

Run it again with the same storage and study name and it continues the study.

``eval_metric``, ``Predict`` and ``evaluate_dp`` are Trace's, unchanged (formatted by ruff).
What changed, and why:

* The data. Instead of ``load_dataset("maveriq/bigbenchhard", task)`` (a download), a small
  built-in list of questions in the format of the task ``boolean_expressions``: ``TRAIN`` is
  optimized on, ``TEST`` only reported, as Trace's ``trainset`` and ``test_set``.
* The agent's own LLM. ``LLMCallable`` keeps its ``call_llm`` (unchanged), but its client is
  ``LocalModel``, a deterministic offline stand-in for ``autogen.OpenAIWrapper``: it works the
  boolean expression out and answers in a sentence ("... evaluates to True."), or, when the
  prompt asks for a final line ``Answer: <answer>``, ends with that line ("Answer: True."),
  with the trailing period many models write. So the program fails the way Trace's runs
  show: ``extract_answer`` finds no ``Answer:`` (an ``IndexError``), then keeps the period.
* Trace's ``learn_predict`` (an online loop over the examples: forward, feedback, backward,
  step; checkpoints judged on a validation set; after an ``ExecutionError``, back to the best
  checkpoint) becomes ``evaluate`` below plus ``study.optimize``. ``evaluate`` runs the loop's
  body on every example of the list, with its ``GRAPH.clear()``, its feedback and its
  ``except ExecutionError`` branch; the score is the share answered right (Trace's
  ``train_acc``), and the feedback and output are the first wrong example's (what Trace's loop
  would step on next). Checkpoints and the return to the best one are what a study does:
  every candidate is stored, and the next step starts from the best. ``PredictCoT``, ``ray``,
  ``tqdm``, the pickled stats and the task loop are left out.

About the optimizer's model. The default, ``simulated/feedback-follower``, is a simulation, not
a language model (``trace_optuna.testing.simulated``): it follows a small feedback grammar by
rule and cannot act on Trace's feedback ("The answer is wrong. We expect ..."). So
``--feedback`` chooses what the grader says:

* ``plain`` (the default): Trace's feedback. A real model (``--llm openai/gpt-4o-mini``, needs
  ``OPENAI_API_KEY``) can act on it; the simulated model proposes nothing (score 0).
* ``directive``: the same, plus the edit in the simulated model's grammar: add the final-line
  instruction to the prompt, then strip the period in ``extract_answer``'s code; the offline run
  reaches every answer right in three trials.
"""

# ruff: noqa: E501 (Trace's docstrings in the trainable code stay as they are)
from __future__ import annotations

import argparse
import re
from textwrap import dedent
from types import SimpleNamespace

from opto.trace import ExecutionError
from opto.trace import bundle
from opto.trace import model
from opto.trace.nodes import GRAPH
from opto.trace.nodes import ParameterNode

import trace_optuna as to

#: Questions in the format of BigBench-Hard's ``boolean_expressions`` (input, target).
TRAIN = [
    {"question": "not ( True ) and ( True ) is", "answer": "False"},
    {"question": "True and not not ( not False ) is", "answer": "True"},
    {"question": "not True or ( False and True ) is", "answer": "False"},
    {"question": "False or not ( True ) and False is", "answer": "False"},
    {"question": "not not ( not ( False ) ) is", "answer": "True"},
    {"question": "True or False and not True is", "answer": "True"},
]
TEST = [
    {"question": "( not False ) and ( True ) is", "answer": "True"},
    {"question": "not ( False or True ) is", "answer": "False"},
    {"question": "False and not False or not False is", "answer": "True"},
]

FORMAT_INSTRUCTION = "Answer: <answer>"
BOOLEAN_WORDS = {"True", "False", "not", "and", "or", "(", ")"}


class LocalModel:
    """A deterministic stand-in for ``autogen.OpenAIWrapper``: ``create(messages=...)``."""

    def create(self, messages, **kwargs):
        prompt = messages[-1]["content"]
        question = prompt.rsplit("Question:", 1)[-1].split("Answer:", 1)[0].strip()
        expression = question.removesuffix(" is").strip()
        value = "unknown"
        if expression and set(expression.split()) <= {
            "True",
            "False",
            "not",
            "and",
            "or",
            "(",
            ")",
        }:
            value = str(eval(expression, {"__builtins__": {}}))  # only the words checked above
        if FORMAT_INSTRUCTION in prompt:
            content = f"Let's think step by step. {expression} is {value}.\nAnswer: {value}."
        else:
            content = f"Let's think step by step: {expression} evaluates to {value}."
        message = SimpleNamespace(content=content)
        return SimpleNamespace(choices=[SimpleNamespace(message=message)])


# ---- Trace's program (LLMCallable's client made local) --------------------------------------


def eval_metric(true, prediction):
    # two types of answers:
    # (A)/(B) or "syndrome therefrom"/8/No/invalid
    matches = re.findall(r"\([A-Z]\)", true)
    if matches:
        pred = prediction
        matches = re.findall(r"\([A-Z]\)", pred)
        parsed_answer = matches[-1] if matches else ""
        return parsed_answer == true
    else:
        # substring match
        return prediction == true


class LLMCallable:
    def __init__(self, config_list=None, max_tokens=1024, verbose=False):
        self.llm = LocalModel()  # Trace: autogen.OpenAIWrapper(config_list=config_list)
        self.max_tokens = max_tokens
        self.verbose = verbose

    @bundle(catch_execution_error=False)
    def call_llm(self, user_prompt):
        """
        Sends the constructed prompt (along with specified request) to an LLM.
        """
        system_prompt = "You are a helpful assistant.\n"
        if self.verbose not in (False, "output"):
            print("Prompt\n", system_prompt + user_prompt)

        messages = [
            {"role": "system", "content": system_prompt},
            {"role": "user", "content": user_prompt},
        ]

        try:
            response = self.llm.create(
                messages=messages,
                response_format={"type": "json_object"},
            )
        except Exception:
            response = self.llm.create(messages=messages, max_tokens=self.max_tokens)
        response = response.choices[0].message.content

        if self.verbose:
            print("LLM response:\n", response)
        return response


@model
class Predict(LLMCallable):
    def __init__(self):
        super().__init__()

        self.demos = []
        self.prompt_template = dedent(
            """
            Given the fields `question`, produce the fields `answer`.

            ---

            Follow the following format.

            Question: 
            Answer: 

            ---
            Question: {}
            Answer:
            """  # noqa: W291 (Trace's template, trailing spaces included)
        )

        self.prompt_template = ParameterNode(
            self.prompt_template,
            trainable=True,
            description="[ParameterNode] This is the Prompt Template to the LLM. "
            + "Need to include information about what the format of answers LLM should output. "
            + "They can be (A)/(B), a number like 8, or a string, or Yes/No.",
        )

    @bundle(trainable=True, catch_execution_error=True, allow_external_dependencies=True)
    def extract_answer(self, prompt_template, question, response):
        """
        Need to read in the response, which can contain additional thought, delibration and an answer.
        Use code to process the response and find where the answer is.
        Can use self.call_llm("Return the answer from this text: " + response) again to refine the answer if necessary.

        Args:
            prompt_template: The prompt that was used to query LLM to get the response
            question: Question has a text describing the question but also "Options"
            response: LLM returned a string response
                      Process it and return the answer in the exact format that the evaluator wants to see.
                      Be mindful of the type of answer you need to produce.
                      It can be (A)/(B), a number like 8, or a string, or Yes/No.
        """
        answer = response.split("Answer:")[1].strip()
        return answer

    @bundle(trainable=True, catch_execution_error=True, allow_external_dependencies=True)
    def create_prompt(self, prompt_template, question):
        """
        The function takes in a question and then add to the prompt for LLM to answer.
        Args:
            prompt_template: some guidance/hints/suggestions for LLM
            question: the question for the LLM to answer
        """
        return prompt_template.format(question)

    def forward(self, question):
        """
        question: text

        We read in a question and produces a response
        """
        user_prompt = self.create_prompt(self.prompt_template, question)
        response = self.call_llm(user_prompt)
        answer = self.extract_answer(self.prompt_template, question, response)
        return answer


def evaluate_dp(dp, examples):
    rewards = 0
    responses = []
    for example in examples:
        try:
            response = dp.forward(example["question"])
            responses.append(response.data)
            correctness = eval_metric(example["answer"], response.data)
        except Exception:
            correctness = False
            responses.append(None)

        rewards += correctness
    return rewards / len(examples), responses


# ---- trace_optuna: learn_predict's loop body as evaluate ------------------------------------


def grade(dp: Predict, example: dict[str, str]) -> tuple[object, str, bool]:
    """The body of Trace's ``learn_predict`` loop for one example: the output node, Trace's
    feedback, and whether the answer is right (an ``ExecutionError``'s node and message when
    the program raised)."""
    try:
        response = dp.forward(example["question"])
        correctness = eval_metric(example["answer"], response.data)
        feedback = (
            "The answer is correct! No need to change anything."
            if correctness
            else "The answer is wrong. We expect the output of your answer to be "
            f'"{example["answer"]}". Please modify the prompt and relevant parts of the '
            "program to help LLM produce the right answer."
        )
    except ExecutionError as e:
        response = e.exception_node
        feedback = response.data
        correctness = False
    return response, feedback, bool(correctness)


def make_evaluate(feedback_style: str = "plain", examples: list[dict[str, str]] = TRAIN):
    """``evaluate(dp)`` over ``examples``; ``feedback_style`` as in the module's docstring."""

    def evaluate(dp: Predict) -> to.Evaluation:
        cum_reward = 0
        first_wrong = None
        for example in examples:
            GRAPH.clear()
            response, feedback, correctness = grade(dp, example)
            cum_reward += correctness
            if not correctness and first_wrong is None:
                first_wrong = (response, _with_directive(feedback, feedback_style, response.data))
        output, feedback = first_wrong if first_wrong is not None else (response, feedback)
        return to.Evaluation(
            score=cum_reward / len(examples),
            feedback=feedback,
            output=output,
            details={"answers_right": int(cum_reward), "questions": len(examples)},
        )

    return evaluate


def make_run(feedback_style: str = "plain"):
    """The dataset form (``--dataset``): ``run(dp, example)``, Trace's loop body on one example.

    trace_optuna draws each step's minibatch of ``TRAIN``, runs this on every example of it and
    batches the examples' outputs and feedback into one backward pass, as Trace's minibatch
    loops do; the candidate is then validated on the validation set (here ``TRAIN`` again, as
    Trace's ``learn_predict`` judges checkpoints) and the best candidate is scored once on
    ``TEST``. No ``GRAPH.clear()`` between examples: the batch's backward pass needs every
    example's graph (trace_optuna releases the graph between trials).
    """

    def run(dp: Predict, example: dict[str, str]) -> to.Evaluation:
        response, feedback, correctness = grade(dp, example)
        if not correctness:
            feedback = _with_directive(feedback, feedback_style, response.data)
        return to.Evaluation(score=float(correctness), feedback=feedback, output=response)

    return run


def _with_directive(feedback: str, feedback_style: str, answer: object) -> str:
    """``feedback`` and, for ``directive``, the edit that fixes it in the simulated grammar."""
    if feedback_style != "directive":
        return feedback
    sentence = feedback if feedback.endswith((".", "!", "?")) else feedback + "."
    if "IndexError" in str(answer):  # extract_answer found no "Answer:" in the response
        return f'{sentence} Add "Finish with a final line {FORMAT_INSTRUCTION}."'
    if isinstance(answer, str) and answer.endswith("."):
        return f"""{sentence} In extract_answer, replace ".strip()" with ".strip().rstrip('.')"."""
    return feedback


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", default="sqlite:///trace_bigbench.db")
    parser.add_argument("--study-name", default="trace-bigbench")
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--llm", default="simulated/feedback-follower")
    parser.add_argument("--feedback", choices=("plain", "directive"), default="plain")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--dataset",
        action="store_true",
        help="the dataset form: a minibatch of TRAIN per step, validation on TRAIN, TEST once",
    )
    args = parser.parse_args(argv)

    if args.dataset:
        question = lambda example: example["question"]  # noqa: E731 (the examples' ids)
        options = {
            "evaluate": make_run(args.feedback),
            "trainset": to.Dataset(TRAIN, id=question),
            "testset": to.Dataset(TEST, id=question),
            "minibatch_size": 3,
        }
    else:
        options = {"evaluate": make_evaluate(args.feedback)}
    study = to.create_study(
        study_name=args.study_name,
        storage=args.storage,
        agent=Predict,
        llm=args.llm,
        seed=args.seed,
        load_if_exists=True,
        **options,
    )
    study.optimize(n_trials=args.trials)
    if args.dataset:
        result = study.test_result
        print(f"test set (stored once by the study): {result}")
    best = study.best_trial
    print(f"best score {best.value:.2f} (trial {best.number}) after {len(study.trials)} trials")
    test_acc, responses = evaluate_dp(study.load_best(), TEST)
    print(f"test accuracy of the best: {test_acc:.2f} {responses}")
    print(f"prompt_template:\n{study.best_snapshot['prompt_template']}")
    print(f"extract_answer:\n{study.best_snapshot['extract_answer']}")


if __name__ == "__main__":
    main()
