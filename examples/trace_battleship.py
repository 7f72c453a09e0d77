"""Trace's Battleship agent, optimized with trace_optuna: two trainable functions' code.

Ported from Microsoft Trace, ``docs/examples/game/battleship.ipynb`` (github.com/microsoft/Trace
at 8190d032e43ffe18943a8cad9ea9ee99e43d6773; the same notebook is in AgentOpt/OpenTrace at
49d72cb2ed87e16c8302c43a01ef3b85161ab093), whose board is ``examples/battleship.py``'s. The
``Policy`` has two trainable functions, ``reason`` and ``act``, that start empty (they return
None); the optimizer writes their code from the feedback of shots on the board.

    python examples/trace_battleship.py --storage sqlite:///battleship.db --trials 4
    python examples/trace_battleship.py --storage postgresql://postgres@127.0.0.1:5432/test

Run it again with the same storage and study name and it continues the study.

The board, the ``Policy`` and the helpers (``user_fb_for_placing_shot``, ``rollout``,
``eval_policy``) are the notebook's, unchanged (formatted by ruff). What changed, and why:

* The notebook's training loop (one shot, its feedback, ``backward``, ``step``, then
  ``eval_policy`` for the log) is ``evaluate`` below plus ``study.optimize``: ``evaluate`` is one
  iteration of that loop, with its ``GRAPH.clear()``, its ``except ExecutionError`` branch and
  the notebook's feedback, and its score is ``eval_policy``'s mean return.
* The notebook's loop is online: the board lives on between steps. Here every evaluation starts
  from ``random.seed(seed)``, so every candidate (and a parent re-run in another process) plays
  the same boards, and a stored score is reproducible.
* The API-key widget cell and ``autogen`` are gone: the optimizer's model is ``--llm``.

About the optimizer's model. The default, ``simulated/feedback-follower``, is a simulation, not
a language model (``trace_optuna.testing.simulated``): it follows a small feedback grammar by
rule and cannot write a policy from the notebook's feedback ("Got 0 reward.", or the error of a
bad coordinate). So ``--feedback`` chooses what the grader says:

* ``plain`` (the default): the notebook's feedback. A real model (``--llm
  openai/gpt-4o-mini``, needs ``OPENAI_API_KEY``) can act on it; the simulated model proposes
  nothing and the policy stays empty (score 0).
* ``directive``: the same, plus, while ``act`` returns no coordinate, the edit in the simulated
  model's grammar (replace ``return`` by a sweep over the cells not shot yet), so the offline run
  writes ``act``'s code and its score rises.
"""

from __future__ import annotations

import argparse
import random

import numpy as np
from opto.trace import GRAPH
from opto.trace import Module
from opto.trace import bundle
from opto.trace import node
from opto.trace.bundle import ExceptionNode
from opto.trace.errors import ExecutionError

import trace_optuna as to

# ---- The notebook's environment, unchanged --------------------------------------------------


def create_battleship_board(width, height):
    board = [["." for _ in range(width)] for _ in range(height)]
    return board


def can_place_ship(board, row, col, size, is_vertical):
    if is_vertical:
        if row + size > len(board):
            return False
        for i in range(size):
            if board[row + i][col] != ".":
                return False
    else:
        if col + size > len(board[0]):
            return False
        for i in range(size):
            if board[row][col + i] != ".":
                return False
    return True


def place_ship(board, row, col, size, is_vertical, ship_symbol):
    if is_vertical:
        for i in range(size):
            board[row + i][col] = ship_symbol
    else:
        for i in range(size):
            board[row][col + i] = ship_symbol


def create_and_fill_battleship_board(width, height, ships, num_each_type=2):
    board = [["." for _ in range(width)] for _ in range(height)]
    for ship_symbol, size in ships.items():
        for _num in range(1, num_each_type + 1):
            placed = False
            while not placed:
                row = random.randint(0, height - 1)
                col = random.randint(0, width - 1)
                is_vertical = random.choice([True, False])
                if can_place_ship(board, row, col, size, is_vertical):
                    place_ship(board, row, col, size, is_vertical, ship_symbol)
                    placed = True
    return board


def check_hit(board, row, col):
    if 0 <= row < len(board) and 0 <= col < len(board[0]):
        if board[row][col] not in [".", "O", "X"]:
            board[row][col] = "X"
            return True
        else:
            if board[row][col] == ".":
                board[row][col] = "O"
    return False


# Ships to be placed on the board
ships = {
    "C": 5,  # Carrier
    "B": 4,  # Battleship
    "R": 3,  # Cruiser
    "S": 3,  # Submarine
    "D": 2,  # Destroyer
}


# Define BattleshipBoard class
class BattleshipBoard:
    def __init__(self, width, height, num_each_type=2, exclude_ships=[], init_with_one_hit=False):  # noqa: B006, E501
        self.width = width
        self.height = height
        self.ships = {s: ships[s] for s in ships if s not in exclude_ships}
        self.board = create_and_fill_battleship_board(
            width, height, self.ships, num_each_type=num_each_type
        )
        self.shots = [["." for _ in range(width)] for _ in range(height)]
        self.hits = 0
        self.misses = 0

        if init_with_one_hit:
            initialized = False
            for row in range(height):
                for col in range(width):
                    if self.board[row][col] != ".":
                        self.check_shot(row, col)
                        initialized = True
                        break
                if initialized:
                    break

    def get_life_points(self):
        return sum(self.ships.values())

    def check_shot(self, row, col):
        is_hit = check_hit(self.board, row, col)
        if is_hit:
            self.hits += 1
            self.shots[row][col] = "X"
        else:
            self.misses += 1
            if self.shots[row][col] == ".":
                self.shots[row][col] = "O"
        return is_hit

    def check_terminate(self):
        return (self.hits >= sum(self.ships.values())) or (
            self.misses + self.hits >= self.width * self.height
        )

    def get_board(self):
        return self.board

    def get_shots(self):
        return self.shots

    def get_shots_overlay_board(self):
        shots_overlay_board = [
            [
                self.board[row][col] if self.shots[row][col] == "." else self.shots[row][col]
                for col in range(self.width)
            ]
            for row in range(self.height)
        ]
        return shots_overlay_board

    def get_hits(self):
        return self.hits

    def get_misses(self):
        return self.misses

    def get_game_status(self):
        if self.hits == sum(self.ships.values()):
            return "Game Over: All ships sunk!"
        return "Game in progress"

    def visualize_board(self):
        str_rep = ""
        for row in self.board:
            str_rep += " ".join(row) + "\n"
        print(str_rep)

    def visualize_own_board(self):
        str_rep = ""
        board = self.get_shots_overlay_board()
        for row in board:
            str_rep += " ".join(row) + "\n"
        print(str_rep)

    def visualize_shots(self):
        str_rep = ""
        for row in self.shots:
            str_rep += " ".join(row) + "\n"
        print(str_rep)


# ---- The notebook's policy, unchanged: the agent --------------------------------------------


# Define Policy class
class Policy(Module):
    def init(self, width, height):
        pass

    def __call__(self, map):
        return self.select_coordinate(map).data

    def select_coordinate(self, map):
        plan = self.reason(map)
        output = self.act(map, plan)
        return output

    @bundle(trainable=True)
    def act(self, map, plan):
        """
        Given a map, select a target coordinate in a game.
        X denotes hits, O denotes misses, and . denotes unknown positions.
        """
        return

    @bundle(trainable=True)
    def reason(self, map):
        """
        Given a map, analyze the board in a game.
        X denotes hits, O denotes misses, and . denotes unknown positions.
        """
        return


# ---- The notebook's helpers, unchanged ------------------------------------------------------


# Function to get user feedback for placing shot
def user_fb_for_placing_shot(board, coords):
    try:
        reward = board.check_shot(coords[0], coords[1])
        new_map = board.get_shots()
        terminal = board.check_terminate()
        return new_map, reward, terminal, f"Got {int(reward)} reward."
    except Exception as e:
        board.misses += 1
        return board.get_shots(), 0, False, str(e)


# Function to rollout policy
def rollout(policy, board):
    rewards = []
    obs = board.get_shots()
    while not board.check_terminate():
        output = policy(obs)
        obs, reward, terminal, feedback = user_fb_for_placing_shot(board, output)
        if terminal:
            break
        rewards.append(reward)
    rewards = np.array(rewards)
    return rewards


# Function to evaluate policy
def eval_policy(policy, board_size, num_each_type, exclude_ships, n_eval_episodes):
    scores = []
    for _ in range(n_eval_episodes):
        board = BattleshipBoard(
            board_size, board_size, num_each_type=num_each_type, exclude_ships=exclude_ships
        )
        rewards = rollout(policy, board)
        scores.append(rewards.mean())
    scores = np.array(scores)
    print(f"Scores: {scores.mean()} ({scores.std()})")
    return scores


# Set parameters (the notebook's)
board_size = 5
num_each_type = 1
exclude_ships = ["C"]
n_eval_episodes = 3

# ---- trace_optuna: the training loop's body as evaluate -------------------------------------

#: The edit the ``directive`` feedback asks for while ``act`` returns no coordinate: shoot the
#: first cell not shot yet, row by row.
SWEEP = (
    "return next([r, c] for r, row in enumerate(map) for c, cell in enumerate(row) if cell == '.')"  # noqa: E501
)


def make_evaluate(feedback_style: str = "plain", seed: int = 0):
    """``evaluate(policy)``: one iteration of the notebook's loop; ``feedback_style`` as above."""

    def evaluate(policy: Policy) -> to.Evaluation:
        random.seed(seed)  # the same boards for every candidate
        board = BattleshipBoard(
            board_size, board_size, num_each_type=num_each_type, exclude_ships=exclude_ships
        )
        obs = node(board.get_shots())  # init observation
        GRAPH.clear()

        try:
            output = policy.select_coordinate(obs)
            obs, reward, terminal, feedback = user_fb_for_placing_shot(board, output.data)
        except ExecutionError as e:  # this is a retry
            output = e.exception_node
            feedback = output.data
            reward, terminal = 0, False

        if feedback_style == "directive" and not _is_coordinate(output.data):
            feedback += (
                f" The act function returned {output.data!r}, not a [row, col] of a cell not "
                f'shot yet. In act, replace "return" with "{SWEEP}".'
            )

        # The notebook's logging: the policy's mean return over n_eval_episodes games.
        score = 0.0
        if not isinstance(output, ExceptionNode):
            try:
                returns = eval_policy(
                    policy, board_size, num_each_type, exclude_ships, n_eval_episodes
                )
                score = float(returns.mean())
            except Exception:
                pass
        return to.Evaluation(
            score=score,
            feedback=feedback,
            output=output,
            details={"shot": repr(output.data), "reward": int(reward), "terminal": terminal},
        )

    return evaluate


def _is_coordinate(value: object) -> bool:
    return (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(x, int) and 0 <= x < board_size for x in value)
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", default="sqlite:///trace_battleship.db")
    parser.add_argument("--study-name", default="trace-battleship")
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--llm", default="simulated/feedback-follower")
    parser.add_argument("--feedback", choices=("plain", "directive"), default="plain")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    study = to.create_study(
        study_name=args.study_name,
        storage=args.storage,
        agent=Policy,
        evaluate=make_evaluate(args.feedback, args.seed),
        llm=args.llm,
        seed=args.seed,
        load_if_exists=True,
    )
    study.optimize(n_trials=args.trials)
    best = study.best_trial
    print(f"best score {best.value:.3f} (trial {best.number}) after {len(study.trials)} trials")
    print(f"act:\n{study.best_snapshot['act']}")


if __name__ == "__main__":
    main()
