"""Benchmarks (a) and (c): multi-turn rollout efficiency and the share of rollout time spent in env steps.

(a) generated tokens/s of multi-turn rollouts (``cmpo.rollout.RolloutCollector``, transformers
    engine, every unfinished dialogue in one ``generate`` call per turn, wall time of the whole
    rollout: generation, env steps, chat-template deltas) divided by the tokens/s of ONE plain batched
    ``generate`` over the same number of sequences (the same opening prompts) and the same number of
    generated tokens per sequence (forced with ``min_new_tokens``), on the same model. Target >= 0.8.
(c) env-step time / rollout wall time with the embedded persona simulator. Target <= 1 %.

    python benchmarks/rollout_efficiency.py --out benchmarks/results/rollout_efficiency.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path


def plain_generate_tokens_per_s(model, tokenizer, prompts: list[list[int]], new_tokens: int) -> tuple[float, float]:
    """One batched sampling ``generate`` (left padding, KV cache) of exactly ``new_tokens`` per
    prompt: tokens per second of wall time and of CPU time."""
    import torch

    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    t0, c0 = time.perf_counter(), time.process_time()
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0, top_k=None,
                             top_p=None, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                             pad_token_id=tokenizer.pad_token_id)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert out.shape[1] - width == new_tokens
    return len(prompts) * new_tokens / wall, len(prompts) * new_tokens / cpu


def measure(model_dir: str, args) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import interactcs_gym  # noqa: F401
    from cmpo.engines import SamplingParams, make_engine, stop_token_ids_for
    from cmpo.rollout import RolloutCollector

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    sampling = SamplingParams(max_new_tokens=args.max_new_tokens, stop_token_ids=stop_token_ids_for(tokenizer))
    engine = make_engine("transformers", model, tokenizer, sampling)
    collector = RolloutCollector(args.env, engine, tokenizer, group_size=args.group_size,
                                 env_kwargs=json.loads(args.env_kwargs))
    seeds = list(range(args.groups))
    collector.collect(seeds[:1])  # warm-up (first generate call, env data loading)
    c0 = time.process_time()
    episodes = collector.collect(seeds)
    cpu = time.process_time() - c0
    stats = collector.stats
    multi, multi_cpu = stats.generated_tokens / stats.total_s, stats.generated_tokens / cpu
    per_sequence = round(stats.generated_tokens / len(episodes))
    openings = [ep.token_ids[:ep.prompt_length] for ep in episodes]
    plain_generate_tokens_per_s(model, tokenizer, openings[:2], 4)  # warm-up
    plain, plain_cpu = plain_generate_tokens_per_s(model, tokenizer, openings, per_sequence)
    return {"dialogues": len(episodes), "turns_mean": statistics.mean(ep.num_turns for ep in episodes),
            "generated_tokens": stats.generated_tokens, "generation_calls": stats.generation_calls,
            "rollout_s": stats.total_s, "generation_s": stats.generation_s, "env_s": stats.env_s,
            "multi_turn_tokens_per_s": multi, "plain_generate_tokens_per_s": plain,
            "efficiency": multi / plain, "efficiency_cpu_time": multi_cpu / plain_cpu,
            "env_fraction": stats.env_s / stats.total_s}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="FDS-Hard-v0")
    parser.add_argument("--env_kwargs", default='{"split": "train"}')
    parser.add_argument("--hidden", type=int, nargs="+", default=[64, 256], help="tiny-model widths")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--groups", type=int, default=4)
    parser.add_argument("--group_size", type=int, default=4)
    parser.add_argument("--max_new_tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared CPU)")
    parser.add_argument("--out", default="benchmarks/results/rollout_efficiency.json")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from cmpo.tiny_model import build_tiny_model

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for hidden in args.hidden:
            model_dir = str(build_tiny_model(Path(tmp) / f"model-{hidden}", hidden=hidden, layers=args.layers))
            runs = [measure(model_dir, args) for _ in range(args.repeats)]
            for run in runs:
                print(f"hidden={hidden}: {run['dialogues']} dialogues, {run['turns_mean']:.1f} turns, "
                      f"{run['generated_tokens']} tokens; multi-turn {run['multi_turn_tokens_per_s']:.0f} tok/s, "
                      f"plain {run['plain_generate_tokens_per_s']:.0f} tok/s, efficiency {run['efficiency']:.3f} "
                      f"(CPU time: {run['efficiency_cpu_time']:.3f}), "
                      f"env {100 * run['env_fraction']:.2f} %", flush=True)
            results.append({"hidden": hidden, "layers": args.layers,
                            "efficiency": statistics.median(r["efficiency"] for r in runs),
                            "efficiency_cpu_time": statistics.median(r["efficiency_cpu_time"] for r in runs),
                            "env_fraction": statistics.median(r["env_fraction"] for r in runs), "runs": runs})
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
    for row in results:
        print(f"hidden {row['hidden']}: rollout efficiency {row['efficiency']:.3f} wall, "
              f"{row['efficiency_cpu_time']:.3f} CPU time (target >= 0.8), "
              f"env share {100 * row['env_fraction']:.2f} % (target <= 1 %)")


if __name__ == "__main__":
    main()
