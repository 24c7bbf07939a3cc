"""Score a local model folder on a test split like any agent, with batched generation.

Episode (user ``u``, seed ``s``) is ``env.reset(seed=s, options={"user_index": u})``, the convention
of ``python -m interactcs_gym.evaluate`` and ``benchmarks/fds_reference_agents.py``, so the numbers
sit in the same table as the reference agents'. All episodes of a seed run together through the
rollout engine (:meth:`~cmpo.engines.GenerationEngine.run_dialogues`: every dialogue waiting for a
turn in one generation call), the way training rollouts do; sampling is seeded by ``s``.

    python -m cmpo.evaluate_policy runs/x/final --env FDS-Hard-v0 --users 80 --seeds 3 [--greedy]

(The evaluation CLI plays the same model too, batched, with its results file, resume and report:
``--agent policy --agent-kwargs '{"model": "runs/x/final"}' --batch-size 32``; its agent seeds
follow the CLI's convention, so sampled turns differ from this module's.)
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

#: Demand types of FDS, in report order.
DEMANDS = ("incentive_open", "preference_learning", "feedback_oriented", "rigid_pursuit")


def play_test_split(model, tokenizer, *, env_id: str = "FDS-Hard-v0", users: int = 80, seeds: int = 3,
                    temperature: float = 1.0, greedy: bool = False, max_new_tokens: int = 96,
                    env_kwargs: dict[str, Any] | None = None, progress: bool = False) -> list[dict[str, Any]]:
    """One record per episode (user u, seed s): ``user``, ``seed``, ``sat``, ``fr``, ``voucher``,
    ``demand``, ``turns``, ``reason``."""
    import torch
    from tqdm.auto import tqdm

    from cmpo.engines import SamplingParams, make_engine, stop_token_ids_for
    from cmpo.rollout import RolloutCollector

    sampling = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, greedy=greedy,
                              stop_token_ids=stop_token_ids_for(tokenizer, getattr(model, "generation_config", None)))
    engine = make_engine("transformers", model, tokenizer, sampling)
    collector = RolloutCollector(env_id, engine, tokenizer, group_size=1, env_kwargs=env_kwargs or {})
    records = []
    model.eval()
    try:
        for s in tqdm(range(seeds), desc=f"eval {env_id}", disable=not progress, leave=False):
            torch.manual_seed(s)
            episodes = collector.collect([s] * users, options=[{"user_index": u} for u in range(users)])
            for u, ep in enumerate(episodes):
                info = ep.final_info
                records.append({"user": u, "seed": s, "sat": info.get("satisfaction"),
                                "fr": bool(info.get("finished_ok")), "voucher": bool(info.get("voucher_issued")),
                                "demand": (info.get("task") or {}).get("demand_type"),
                                "turns": ep.num_turns, "reason": ep.termination_reason})
    finally:
        collector.close()
    return records


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The Table-1 columns without a judge: Sat (mean over episodes) ± the std of the per-seed
    means, FR %, V-Rate %, and Sat / V-Rate % per demand type. An episode that ended without a
    satisfaction (cut by the context length) counts as Sat 1."""
    if not records:
        raise ValueError("no episodes to summarize")
    sat = [r["sat"] if r["sat"] is not None else 1 for r in records]
    by_seed = defaultdict(list)
    for r, x in zip(records, sat):
        by_seed[r["seed"]].append(x)
    per_seed = [statistics.mean(v) for v in by_seed.values()]
    out = {"sat": statistics.mean(sat), "sat_std": statistics.pstdev(per_seed) if len(per_seed) > 1 else 0.0,
           "fr": 100 * statistics.mean(r["fr"] for r in records),
           "v_rate": 100 * statistics.mean(r["voucher"] for r in records),
           "turns": statistics.mean(r["turns"] for r in records), "episodes": len(records),
           "by_demand": {}}
    for d in DEMANDS:
        rows = [(r, x) for r, x in zip(records, sat) if r["demand"] == d]
        if rows:
            out["by_demand"][d] = {"sat": statistics.mean(x for _, x in rows),
                                   "v_rate": 100 * statistics.mean(r["voucher"] for r, _ in rows)}
    return out


def main(argv: list[str] | None = None) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import interactcs_gym  # noqa: F401

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="local model folder (HF format, with its tokenizer)")
    parser.add_argument("--env", default="FDS-Hard-v0")
    parser.add_argument("--users", type=int, default=80)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--greedy", action="store_true", help="argmax decoding instead of sampling")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--out", default=None, help="also write the episode records (JSONL)")
    args = parser.parse_args(argv)
    if not Path(args.model).is_dir():
        parser.error(f"no model folder at {args.model}")
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model)
    records = play_test_split(model, tokenizer, env_id=args.env, users=args.users, seeds=args.seeds,
                              temperature=args.temperature, greedy=args.greedy,
                              max_new_tokens=args.max_new_tokens, progress=True)
    if args.out:
        Path(args.out).write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    s = summarize(records)
    print(f"Sat {s['sat']:.2f} ± {s['sat_std']:.2f} | FR {s['fr']:.1f} % | V-Rate {s['v_rate']:.1f} %")
    for d, v in s["by_demand"].items():
        print(f"  {d}: Sat {v['sat']:.2f}, V-Rate {v['v_rate']:.1f} %")


if __name__ == "__main__":
    main()
