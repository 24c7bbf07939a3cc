"""Benchmarks (a) and (c): multi-turn rollout efficiency and the share of rollout time spent in env steps.

(a) efficiency = generated tokens/s of multi-turn rollouts / tokens/s of ONE plain batched
    ``generate`` over the same number of sequences and generated tokens, on the same model. Target >= 0.8.

    * multi-turn: ``cmpo.rollout.RolloutCollector`` with the transformers engine, ``groups`` x G
      dialogues of the env; tokens/s = the agent tokens it sampled / the wall time of the whole
      ``collect`` (generation calls, env steps, chat-template deltas, cache bookkeeping).
    * plain: ``model.generate`` on the same dialogues' opening prompts (left padding, KV cache),
      forced to sample exactly the multi-turn run's mean number of agent tokens per dialogue
      (``min_new_tokens`` = ``max_new_tokens``); tokens/s = those tokens / its wall time, prefill
      included (as the rollout's is).
    * same model object, sampling (temperature 1, no top-k/top-p), torch threads; a warm-up call of
      each precedes the timed ones; each side is timed ``timings`` times on the same work (the same
      seeds) and its fastest time kept; ``repeats`` such runs, the median reported.

(c) env share = wall time inside ``env.reset``/``env.step`` / rollout wall time. Target <= 1 %.

Two policies on the tiny local model (``--policy``):

* ``random``: random weights. No turn is well formed, so every turn runs to ``max_new_tokens`` and
  every reply is the env's protocol notice (~200 tokens): long, uniform turns, fast-growing context.
* ``taught``: the same model taught the never-voucher agent's first turn
  (``cmpo.tiny_model.teach_opening_turn``): its turns end by themselves at different lengths (the
  first ones well formed), as a fine-tuned policy's do.

Diagnostics (why the ratio is what it is): forward passes and rows computed per forward (decode steps)
on each side, the agent tokens of the longest dialogue (no rollout can take fewer sequential decode
steps), the mean attention context of a sampled token, and the plain rate (1) from prompts as
long as the dialogues' mean context (``efficiency_same_context``), (2) with each row sampling as many
tokens as its dialogue did (``efficiency_ragged``), (3) with the engine's in-place cache
(``GrowingLayer``) instead of transformers' ``DynamicCache`` (``efficiency_same_cache``).

    python benchmarks/rollout_efficiency.py --policy random taught --hidden 64 256 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path


class ForwardCounter:
    """Counts a model's forward passes: how many, and how many rows the one-token (decode) ones had."""

    def __init__(self, model) -> None:
        self.calls, self.decode_steps, self.decode_rows = 0, 0, 0
        self._hook = model.register_forward_pre_hook(self._count, with_kwargs=True)

    def _count(self, module, args, kwargs) -> None:
        ids = kwargs.get("input_ids")
        self.calls += 1
        if ids is not None and ids.shape[1] == 1:
            self.decode_steps += 1
            self.decode_rows += ids.shape[0]

    def reset(self) -> None:
        self.calls, self.decode_steps, self.decode_rows = 0, 0, 0

    def remove(self) -> None:
        self._hook.remove()


class ForceLengths:
    """Logits processor that makes row i of a ``generate`` call end with ``eos`` as its
    ``lengths[i]``-th token (never earlier)."""

    def __init__(self, lengths: list[int], eos: int, prompt_width: int) -> None:
        self.lengths, self.eos, self.prompt_width = lengths, eos, prompt_width

    def __call__(self, input_ids, scores):
        step = input_ids.shape[1] - self.prompt_width  # tokens generated so far
        for row, length in enumerate(self.lengths):
            if step == length - 1:
                scores[row, :] = -float("inf")
                scores[row, self.eos] = 0.0
            elif step < length - 1:
                scores[row, self.eos] = -float("inf")
        return scores


def plain_generate(model, tokenizer, prompts: list[list[int]], new_tokens: int | list[int],
                   cache=None) -> tuple[float, float]:
    """One batched sampling ``generate`` (left padding, KV cache: transformers' default
    ``DynamicCache`` unless ``cache`` is given); row i samples exactly ``new_tokens`` (or
    ``new_tokens[i]``) tokens. Returns its wall time and CPU time in seconds."""
    import torch
    from transformers import LogitsProcessorList

    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    kwargs = {"min_new_tokens": new_tokens, "max_new_tokens": new_tokens}
    if isinstance(new_tokens, list):  # ragged: each row ends with eos at its own length
        kwargs = {"max_new_tokens": max(new_tokens), "eos_token_id": tokenizer.eos_token_id,
                  "logits_processor": LogitsProcessorList([ForceLengths(new_tokens, tokenizer.eos_token_id, width)])}
    if cache is not None:
        kwargs["past_key_values"] = cache
    t0, c0 = time.perf_counter(), time.process_time()
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0, top_k=0,
                             top_p=1.0, pad_token_id=tokenizer.pad_token_id, **kwargs)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    lengths = new_tokens if isinstance(new_tokens, list) else [new_tokens] * len(prompts)
    generated = out[:, width:]
    for row, length in zip(generated.tolist(), lengths):
        assert len(row) >= length and (length == len(row) or row[length - 1] == tokenizer.eos_token_id)
    return wall, cpu


def mean_context(episodes) -> float:
    """Mean number of earlier tokens a sampled token attends to (its position in the dialogue)."""
    positions = [j for ep in episodes for start, end in ep.turn_spans for j in range(start, end)]
    return statistics.mean(positions)


def measure(model_dir: str, args) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import interactcs_gym  # noqa: F401
    from cmpo.engines import SamplingParams, make_engine, stop_token_ids_for
    from cmpo.engines.kv_cache import new_cache
    from cmpo.rollout import RolloutCollector

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    sampling = SamplingParams(max_new_tokens=args.max_new_tokens, stop_token_ids=stop_token_ids_for(tokenizer))
    engine = make_engine("transformers", model, tokenizer, sampling, compaction=not args.no_compaction,
                         join_turns=not args.no_join)
    collector = RolloutCollector(args.env, engine, tokenizer, group_size=args.group_size,
                                 env_kwargs=json.loads(args.env_kwargs))
    seeds = list(range(args.groups))
    collector.collect(seeds[:1])  # warm-up (first generate call, env data loading)
    counter = ForwardCounter(model)
    timings = []
    for _ in range(args.timings):  # the same seeds and sampling seed: the same dialogues each time
        torch.manual_seed(1)
        c0 = time.process_time()
        episodes = collector.collect(seeds)
        timings.append((collector.stats, time.process_time() - c0, episodes))
        if len(timings) == 1:
            multi = {"calls": counter.calls, "decode_steps": counter.decode_steps, "decode_rows": counter.decode_rows}
    if len({t[0].generated_tokens for t in timings}) != 1:
        raise RuntimeError("repeated rollouts sampled different dialogues: cannot take the best timing")
    stats, multi_cpu, episodes = min(timings, key=lambda t: t[0].total_s)
    per_sequence = round(stats.generated_tokens / len(episodes))
    tokens = per_sequence * len(episodes)
    openings = [ep.token_ids[:ep.prompt_length] for ep in episodes]
    plain_generate(model, tokenizer, openings[:2], 4)  # warm-up
    counter.reset()
    plain_s, plain_cpu = plain_generate(model, tokenizer, openings, per_sequence)
    plain = {"calls": counter.calls, "decode_steps": counter.decode_steps, "decode_rows": counter.decode_rows}
    for _ in range(args.timings - 1):
        plain_s, plain_cpu = min((plain_s, plain_cpu), plain_generate(model, tokenizer, openings, per_sequence))
    # Diagnostics. (1) Ragged: each row samples as many tokens as its dialogue's agent did, in one
    # call (rows that are done are padded until the longest ends, as generate does).
    ragged_s, _ = plain_generate(model, tokenizer, openings, [ep.num_generated_tokens for ep in episodes])
    # (2) Same context: prompts longer by the same number of tokens, so that the plain tokens'
    # mean context equals the dialogues' (padding between rows as in the openings).
    context = mean_context(episodes)
    mean_plain_context = statistics.mean(len(o) for o in openings) + (per_sequence - 1) / 2
    shift = max(0, round(context - mean_plain_context))
    same_context = [ep.token_ids[:min(len(ep.token_ids), ep.prompt_length + shift)] for ep in episodes]
    same_context_s, _ = plain_generate(model, tokenizer, same_context, per_sequence)
    # (3) Same cache: the plain generate with the engine's in-place cache instead of DynamicCache.
    same_cache_s, _ = plain_generate(model, tokenizer, openings, per_sequence, cache=new_cache(model.config))
    counter.remove()
    multi_rate = stats.generated_tokens / stats.total_s
    return {"dialogues": len(episodes), "turns_mean": statistics.mean(ep.num_turns for ep in episodes),
            "generated_tokens": stats.generated_tokens, "generation_calls": stats.generation_calls,
            "stop_rate": statistics.mean(r == "stop" for ep in episodes for r in ep.finish_reasons),
            "rollout_s": stats.total_s, "generation_s": stats.generation_s, "env_s": stats.env_s,
            "multi_turn_tokens_per_s": multi_rate, "plain_generate_tokens_per_s": tokens / plain_s,
            "efficiency": multi_rate / (tokens / plain_s),
            "efficiency_cpu_time": (stats.generated_tokens / multi_cpu) / (tokens / plain_cpu),
            "efficiency_same_context": multi_rate / (tokens / same_context_s),
            "efficiency_ragged": multi_rate / (stats.generated_tokens / ragged_s),
            "efficiency_same_cache": multi_rate / (tokens / same_cache_s),
            "env_fraction": stats.env_s / stats.total_s,
            "outside_generation_fraction": 1 - stats.generation_s / stats.total_s,
            "multi_forwards": multi, "plain_forwards": plain,
            "longest_dialogue_tokens": max(ep.num_generated_tokens for ep in episodes),
            "mean_context_multi": context,
            "mean_context_plain": mean_plain_context}


def policy_model(policy: str, hidden: int, layers: int, root: Path) -> str:
    from cmpo.tiny_model import build_tiny_model, teach_opening_turn

    path = build_tiny_model(root / f"model-{hidden}", hidden=hidden, layers=layers)
    if policy == "taught":
        taught = root / f"model-{hidden}-taught"
        if not taught.exists():
            teach_opening_turn(path, taught, agent="never-voucher", env_id="FDS-Hard-v0",
                               env_kwargs={"split": "train"})
        return str(taught)
    return str(path)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", nargs="+", default=["random", "taught"], choices=["random", "taught"])
    parser.add_argument("--env", default="FDS-Hard-v0")
    parser.add_argument("--env_kwargs", default='{"split": "train"}')
    parser.add_argument("--hidden", type=int, nargs="+", default=[64, 256], help="tiny-model widths")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--groups", type=int, default=4)
    parser.add_argument("--group_size", type=int, default=4)
    parser.add_argument("--max_new_tokens", type=int, default=None,
                        help="per agent turn (default: 32 for random, 96 for taught)")
    parser.add_argument("--no_compaction", action="store_true",
                        help="compute every row until a turn's longest row ends (the engine before compaction)")
    parser.add_argument("--no_join", action="store_true",
                        help="one generation call per turn: no turn joins the rows still writing")
    parser.add_argument("--repeats", type=int, default=3, help="runs (the tables give their median)")
    parser.add_argument("--timings", type=int, default=2,
                        help="within a run, time the rollout and the plain generate this many times each "
                             "(the same work) and keep each side's fastest: steadier on a shared machine")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared CPU)")
    parser.add_argument("--out", default="benchmarks/results/rollout_efficiency.json")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for policy in args.policy:
            run_args = argparse.Namespace(**vars(args))
            if run_args.max_new_tokens is None:
                run_args.max_new_tokens = 32 if policy == "random" else 96
            for hidden in args.hidden:
                model_dir = policy_model(policy, hidden, args.layers, Path(tmp))
                runs = [measure(model_dir, run_args) for _ in range(args.repeats)]
                for run in runs:
                    print(f"{policy} hidden={hidden}: {run['dialogues']} dialogues x {run['turns_mean']:.1f} turns, "
                          f"{run['generated_tokens']} tokens ({100 * run['stop_rate']:.0f} % of turns stopped); "
                          f"multi-turn {run['multi_turn_tokens_per_s']:.0f} tok/s, plain "
                          f"{run['plain_generate_tokens_per_s']:.0f} tok/s, efficiency {run['efficiency']:.3f} "
                          f"(CPU time {run['efficiency_cpu_time']:.3f}) "
                          f"(same context: {run['efficiency_same_context']:.3f}, ragged: {run['efficiency_ragged']:.3f}, "
                          f"same cache: {run['efficiency_same_cache']:.3f}); decode steps "
                          f"{run['multi_forwards']['decode_steps']} vs {run['plain_forwards']['decode_steps']} "
                          f"(longest dialogue {run['longest_dialogue_tokens']} tokens); "
                          f"context {run['mean_context_multi']:.0f} vs {run['mean_context_plain']:.0f}; "
                          f"env {100 * run['env_fraction']:.2f} %", flush=True)
                results.append({"policy": policy, "hidden": hidden, "layers": args.layers,
                                "max_new_tokens": run_args.max_new_tokens,
                                **{key: statistics.median(r[key] for r in runs)
                                   for key in ("efficiency", "efficiency_cpu_time", "efficiency_same_context", "efficiency_ragged", "efficiency_same_cache", "env_fraction",
                                               "outside_generation_fraction")},
                                "runs": runs})
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
    for row in results:
        print(f"{row['policy']} hidden {row['hidden']}: rollout efficiency {row['efficiency']:.3f} "
              f"(CPU time {row['efficiency_cpu_time']:.3f}; target >= 0.8; "
              f"{row['efficiency_same_context']:.3f} against a plain generate at the same context), "
              f"env share {100 * row['env_fraction']:.2f} % (target <= 1 %)")


if __name__ == "__main__":
    main()
