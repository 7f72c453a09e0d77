"""optuna-dashboard as an optional dependency: imported only when used, and then failing
with the extra that installs it; whether it is installed, found without importing it.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

_logger = logging.getLogger(__name__)

EXTRA = "trace-optuna[dashboard]"


def _optuna_dashboard() -> Any:
    """Import optuna_dashboard, or fail naming the extra that installs it."""
    try:
        import optuna_dashboard
    except ImportError as error:
        raise ImportError(
            f"This needs optuna-dashboard: pip install {EXTRA} ({error})."
        ) from error
    return optuna_dashboard


_installed: bool | None = None


def _dashboard_installed() -> bool:
    """Whether optuna-dashboard is installed, found without importing it: its import pulls in
    its web app and scikit-learn (about a second), which no trial should pay."""
    global _installed
    if _installed is None:
        _installed = importlib.util.find_spec("optuna_dashboard") is not None
        if not _installed:
            _logger.info(
                "optuna-dashboard is not installed: trials get no note and no figures are saved "
                "(pip install %s).",
                EXTRA,
            )
    return _installed
