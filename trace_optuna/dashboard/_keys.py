"""optuna-dashboard's storage keys of notes and figures, and the chunks their texts are
split into, written without importing optuna-dashboard.
"""

from __future__ import annotations

# optuna-dashboard keeps notes and figures in study system attributes, in chunks of this many
# characters, under the keys below (optuna_dashboard/_note.py, _custom_plot_data.py). They are
# written here without importing optuna-dashboard; tests/test_dashboard.py checks them against
# optuna-dashboard's own key builders, and reads what is written through its REST API.
DASHBOARD_CHUNK_CHARS = 2045


def note_version_key(trial_id: int) -> str:
    """optuna-dashboard's key of a trial note's version."""
    return f"dashboard:{trial_id}:note_ver"


def note_chunk_key(trial_id: int, index: int) -> str:
    """optuna-dashboard's key of chunk ``index`` of a trial's note."""
    return f"dashboard:{trial_id}:note_str:{index}"


_PLOT_DATA = "dashboard:plot_data:"


def figure_chunk_key(graph_object_id: str, index: int) -> str:
    """optuna-dashboard's key of chunk ``index`` of a saved plotly figure's JSON."""
    return f"{_PLOT_DATA}{graph_object_id}:{index}"


def _chunks(text: str) -> list[str]:
    return [
        text[start : start + DASHBOARD_CHUNK_CHARS]
        for start in range(0, len(text), DASHBOARD_CHUNK_CHARS)
    ]
