"""``python -m trace_optuna`` runs the command line."""

import sys

from trace_optuna.cli import main

sys.exit(main())
