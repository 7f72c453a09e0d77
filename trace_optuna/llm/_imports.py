"""litellm, imported the first time trace_optuna needs it, and only here.

litellm takes seconds to import (it pulls in openai, aiohttp, pydantic and its model tables), so
``import trace_optuna`` does not import it: the first :class:`~trace_optuna.LLM`, the simulated
model's registration and Trace's OptoPrime (whose module imports litellm) go through
:func:`import_litellm`.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types import ModuleType

COST_MAP_VARIABLE = "LITELLM_LOCAL_MODEL_COST_MAP"
"""litellm's environment variable that makes it read its bundled model price map."""


def import_litellm() -> ModuleType:
    """Import litellm (on the first call) and return it, configured for a library.

    This is the one place trace_optuna imports litellm, and the one place it touches the
    process environment. Just before litellm's first import in the process it sets
    ``LITELLM_LOCAL_MODEL_COST_MAP=True`` unless the variable is already set (whatever its
    value), because litellm otherwise downloads its model price map from the network while it
    is imported. If something else imported litellm first, the environment is left alone. It
    also sets ``litellm.suppress_debug_info``: litellm prints "Give Feedback / Get Help"
    banners to stdout on every exception, a library must not print, and the exception text
    says everything.

    Returns:
        The ``litellm`` module.

    Example:
        >>> import_litellm().suppress_debug_info
        True
    """
    if "litellm" not in sys.modules:
        os.environ.setdefault(COST_MAP_VARIABLE, "True")
    import litellm

    litellm.suppress_debug_info = True
    return litellm
