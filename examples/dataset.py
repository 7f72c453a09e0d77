"""A dataset study, offline: an order-pricing agent optimized over 60 orders.

Each example is an order (quantity, unit price, discount code) and its expected answer, the
total with its currency, e.g. ``"96.00 EUR"``. The agent has three parameters, and the answer
is right only when all of them are:

* ``price_order``, a trainable function: its starting code refuses quantities over 9 (a bug:
  a fifth of the orders raise);
* ``sale_factor``, a number: what a ``SALE`` order's total is multiplied by (starts at 1.0;
  the shop's rule is 0.8);
* ``instructions``, a prompt: a deterministic local stand-in for the agent's LLM formats the
  total, adding the currency only when the instructions ask for it.

The grader says what is wrong, never the fix: ``expected "96.00 EUR", got "120.00"``, whether
the total is too large or too small, that the currency is missing, or the error the code
raised. Each trial is a step on a minibatch of the training set; a candidate not worse there
is validated on the validation set; the test set is scored once at the end::

    python examples/dataset.py                        # the simulated model, offline
    python examples/dataset.py --llm openai/gpt-4o-mini --trials 20   # needs OPENAI_API_KEY

With the simulated model (``simulated/feedback-follower``, a rule-following simulation for
demos and tests, not a language model) the code and the number are fixed: it deletes the line
raising the error the feedback names, and moves the number the way "too large" points. It does
not fix the prompt: nothing in the feedback is an instruction its rules follow, so offline the
best score stays at 0.5 (totals right, currency missing). A real model reads "the currency is
missing" and writes an instruction that asks for it.
"""

from __future__ import annotations

import argparse
import random

from opto import trace

import trace_optuna as to

CURRENCY = "EUR"
SALE_FACTOR = 0.8


def make_orders(count: int = 60, seed: int = 0) -> list[dict[str, object]]:
    """The orders, each with its expected answer."""
    rng = random.Random(seed)
    orders = []
    for number in range(count):
        quantity = rng.randint(1, 14)
        price = rng.choice([4, 5, 8, 10, 12, 15, 20, 25])
        code = "SALE" if rng.random() < 0.4 else "NONE"
        total = quantity * price * (SALE_FACTOR if code == "SALE" else 1.0)
        orders.append(
            {
                "id": f"order-{number:03d}",
                "quantity": quantity,
                "price": price,
                "code": code,
                "answer": f"{total:.2f} {CURRENCY}",
            }
        )
    return orders


@trace.bundle()
def format_total(instructions, total):
    """The agent's LLM, replaced by a deterministic local stand-in: it writes the total with
    two decimals, and the currency when the instructions ask for it."""
    text = f"{float(total):.2f}"
    if CURRENCY in instructions or "currency" in instructions.lower():
        text += f" {CURRENCY}"
    return text


@trace.model
class OrderAgent:
    """Prices an order, then has its 'LLM' write the answer."""

    def __init__(self) -> None:
        self.instructions = trace.node(
            "Write the order's total.", trainable=True, description="the answer's instructions"
        )
        self.sale_factor = trace.node(
            1.0, trainable=True, description="what a SALE order's total is multiplied by"
        )

    @trace.bundle(trainable=True)
    def price_order(self, quantity, price, code, sale_factor):
        """The order's total before formatting: quantity times unit price, reduced for SALE."""
        total = quantity * price
        if code == "SALE":
            total = total * sale_factor
        if quantity > 9:
            message = f"quantity {quantity} is over the limit of 9"
            raise ValueError(message)
        return total

    def answer(self, order):
        total = self.price_order(
            order["quantity"], order["price"], order["code"], self.sale_factor
        )
        return format_total(self.instructions, total)


def run(agent: OrderAgent, order: dict[str, object]) -> to.Evaluation:
    """Score one order: half for the total, half for the currency; say what is wrong."""
    out = agent.answer(order)
    expected = str(order["answer"])
    got = str(out.data)
    expected_total = float(expected.split()[0])
    got_total = float(got.split()[0])
    total_ok = abs(got_total - expected_total) <= 0.005 * expected_total
    currency_ok = got.endswith(f" {CURRENCY}")
    problems = []
    if not total_ok:
        size = "too large" if got_total > expected_total else "too small"
        problems.append(f"the total is {size}")
    if not currency_ok:
        problems.append("the currency is missing")
    if not problems:
        return to.Evaluation(score=1.0, feedback="Correct.", output=out)
    feedback = f'expected "{expected}", got "{got}": {"; ".join(problems)}.'
    return to.Evaluation(score=0.5 * total_ok + 0.5 * currency_ok, feedback=feedback, output=out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", default="sqlite:///dataset.db")
    parser.add_argument("--study", default="orders")
    parser.add_argument("--llm", default="simulated/feedback-follower")
    parser.add_argument("--trials", type=int, default=15)
    parser.add_argument("--minibatch", type=int, default=6)
    parser.add_argument("--parents", choices=["best", "pareto"], default="best")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    data = to.Dataset(make_orders(), id=lambda order: order["id"])
    train, val, test = data.split(0.5, 0.3, 0.2, seed=0)
    study = to.create_study(
        study_name=args.study,
        storage=args.storage,
        agent=OrderAgent,
        evaluate=run,
        llm=args.llm,
        trainset=train,
        valset=val,
        testset=test,
        minibatch_size=args.minibatch,
        parent_selection=args.parents,
        error_score=0.0,  # an order the code raises on scores 0, its error is the feedback
        seed=args.seed,
        load_if_exists=True,
    )
    study.optimize(n_trials=args.trials)
    best = study.best_trial
    print(f"best validation mean {best.value:.3f} (trial {best.number} of {len(study.trials)})")
    test_result = study.test_result or {}
    print(f"test mean {test_result.get('mean', float('nan')):.3f} on {len(test)} orders")
    for path, value in study.best_snapshot.items():
        print(f"--- {path}\n{value}")


if __name__ == "__main__":
    main()
