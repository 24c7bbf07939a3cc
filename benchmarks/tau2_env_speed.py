"""What the τ² adapters cost per call: reset, a tool-call step, a message step, the last step.

Replays the gold dialogues of the first N tasks of each domain with the scripted user (no LLM in
the loop, so this is the adapter plus the official package: environment construction, tools,
orchestrator, and the official evaluation on the last step) and prints mean milliseconds::

    python benchmarks/tau2_env_speed.py --tasks 20          # needs the tau2 extra (README)
"""

from __future__ import annotations

import argparse
import time
from statistics import mean


def measure(domain: str, n_tasks: int) -> dict[str, float]:
    from interactcs_gym.tau2.env import Tau2Env
    from interactcs_gym.tau2.replay import gold_dialogue

    env = Tau2Env(domain=domain, user_simulator="scripted")
    times: dict[str, list[float]] = {"reset": [], "tool step": [], "message step": [],
                                     "last step": []}
    for index, task in enumerate(env.tasks[:n_tasks]):
        agent, script = gold_dialogue(task)
        start = time.perf_counter()
        env.reset(seed=0, options={"task": index, "user_script": script})
        times["reset"].append(time.perf_counter() - start)
        for action in agent:
            start = time.perf_counter()
            _, _, terminated, truncated, _ = env.step(action)
            elapsed = time.perf_counter() - start
            kind = ("last step" if terminated or truncated
                    else "tool step" if action.startswith("{") else "message step")
            times[kind].append(elapsed)
    return {k: 1000 * mean(v) for k, v in times.items() if v}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=20, help="tasks per domain")
    args = parser.parse_args()

    from interactcs_gym.tau2.official import require_tau2

    require_tau2()
    print("| domain | reset (ms) | tool step (ms) | message step (ms) | last step (ms) |")
    print("|---|---|---|---|---|")
    for domain in ("retail", "airline", "telecom"):
        row = measure(domain, args.tasks)
        cells = [f"{row[k]:.1f}" if k in row else "-"
                 for k in ("reset", "tool step", "message step", "last step")]
        print(f"| {domain} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
