"""``python -m interactcs_gym.evaluate``: the evaluation CLI (see :mod:`interactcs_gym.evaluation.cli`).

    python -m interactcs_gym.evaluate --env FDS-Hard-v0 --agent sop --users 80 --seeds 3 \\
        --out results/sop-hard.jsonl
    python -m interactcs_gym.evaluate report results/*.jsonl --out report.md --plot pareto.png
"""

import sys

from interactcs_gym.evaluation.cli import main

if __name__ == "__main__":
    sys.exit(main())
