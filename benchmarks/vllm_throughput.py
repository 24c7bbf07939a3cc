"""Multi-turn rollout throughput of the vLLM engine against raw ``LLM.generate`` on the same
sequences (the limit) and against the transformers engine, on the same model (the tiny model,
128 wide: head size 32).

* ``vllm_engine``: ``cmpo.rollout.RolloutCollector`` with the colocated vLLM engine (continuous
  batching: each dialogue's next turn joins vLLM's batch as soon as its env has stepped);
  tokens/s = agent tokens sampled / wall time of the whole ``collect`` (env steps included).
* ``vllm_turn_sync``: the same engine making one ``generate`` call per turn.
* ``raw_per_turn`` (the limit): ``LLM.generate`` on the same sequences, replaying the dialogues
  turn by turn, one call per turn on the recorded prompts (earlier turns and the user replies, as
  the rollout had them), each forced to the recorded turn's length (``min_tokens = max_tokens``,
  eos ignored; before each turn, untimed, the dialogues up to the end of the previous agent turn
  are put in the prefix cache, as the rollout has them): the same prefill (the user replies) and
  decode work as the rollout, without env steps, chat templates or scheduling of ours; the same model object, sampling (temperature 1, the sampled token's
  log-prob, no detokenising) and engine.
* ``raw_vllm`` (a bound, not a multi-turn rollout): ``LLM.generate`` on the dialogues' opening
  prompts only, each forced to sample as many tokens as its dialogue's agent turns did, one call.
  It prefills no user reply and decodes with shorter contexts: work a multi-turn rollout cannot
  skip.
* ``transformers``: the collector with the transformers engine on the same weights.

Each side gets a warm-up run, then ``repeats`` timed runs on the same seeds; the median is kept,
and the ``*_per_repeat`` ratios pair each repeat's runs (made seconds apart, so a load change on a
shared machine hits both). Target: ``efficiency`` = vllm_engine / raw_per_turn >= 0.8;
``efficiency_vs_openings`` = vllm_engine / raw_vllm is reported beside it.

    python benchmarks/vllm_throughput.py --groups 8 --group-size 4 --max-new-tokens 64 --max-turns 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--groups", type=int, default=8)
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--max-turns", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--env", default="FDS-Hard-v0")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)

    from transformers import AutoModelForCausalLM, AutoTokenizer
    from vllm import SamplingParams as VLLMSamplingParams

    from cmpo.engines import GenerationEngine, SamplingParams, make_engine, stop_token_ids_for
    from cmpo.engines.vllm_engine import VLLMEngine
    from cmpo.rollout import RolloutCollector
    from cmpo.tiny_model import build_tiny_model

    load_start = os.getloadavg()[0]
    model_dir = build_tiny_model(tempfile.mkdtemp(prefix="tiny-vllm-bench-"), hidden=args.hidden)
    model, tok = AutoModelForCausalLM.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir)
    sampling = SamplingParams(max_new_tokens=args.max_new_tokens, stop_token_ids=stop_token_ids_for(tok))
    vllm_engine = make_engine("vllm", model, tok, sampling, max_model_length=4096)
    llm = vllm_engine.generation.llm

    class TurnSync(VLLMEngine):
        run_dialogues = GenerationEngine.run_dialogues

    turn_sync = TurnSync(model, tok, sampling, accelerator=None, generation=vllm_engine.generation)
    seeds = list(range(args.groups))
    kw = dict(group_size=args.group_size, env_kwargs={"split": "train", "max_turns": args.max_turns},
              max_seq_len=4096)

    def rollout(engine):
        collector = RolloutCollector(args.env, engine, tok, **kw)
        t0 = time.perf_counter()
        episodes = collector.collect(seeds)
        wall = time.perf_counter() - t0
        collector.close()
        return episodes, sum(ep.num_generated_tokens for ep in episodes) / wall, collector.stats

    def forced(prompt: list[int], tokens: int):
        """``tokens`` sampled tokens after ``prompt``, whatever they are (eos ignored)."""
        return ({"prompt_token_ids": prompt},
                VLLMSamplingParams(max_tokens=tokens, min_tokens=tokens, ignore_eos=True, temperature=1.0,
                                   logprobs=0, detokenize=False))

    def timed_generate(requests) -> tuple[int, float]:
        prompts, params = zip(*requests)
        t0 = time.perf_counter()
        outputs = llm.generate(list(prompts), list(params), use_tqdm=False)
        return sum(len(o.outputs[0].token_ids) for o in outputs), time.perf_counter() - t0

    def raw(episodes):
        tokens, wall = timed_generate([forced(ep.token_ids[:ep.prompt_length], ep.num_generated_tokens)
                                       for ep in episodes])
        return tokens / wall

    def raw_per_turn(episodes):
        # the rollout left these dialogues in the prefix cache: keep only their openings, as it had them
        llm.reset_prefix_cache()
        timed_generate([forced(ep.token_ids[:ep.prompt_length], 1) for ep in episodes])
        tokens, wall = 0, 0.0
        for t in range(max(ep.num_turns for ep in episodes)):
            if t:  # the previous turn's tokens, as the rollout had them in its cache (untimed)
                timed_generate([forced(ep.token_ids[:ep.turn_spans[t - 1][1]], 1)
                                for ep in episodes if ep.num_turns > t])
            n, w = timed_generate([forced(ep.token_ids[:ep.turn_spans[t][0]],
                                          ep.turn_spans[t][1] - ep.turn_spans[t][0])
                                   for ep in episodes if ep.num_turns > t])
            tokens, wall = tokens + n, wall + w
        return tokens / wall

    results: dict[str, list[float]] = {"vllm_engine": [], "raw_vllm": [], "raw_per_turn": [],
                                       "vllm_turn_sync": [], "transformers": []}
    engines = {"vllm_engine": vllm_engine, "vllm_turn_sync": turn_sync,
               "transformers": make_engine("transformers", model, tok, sampling)}
    rollout(vllm_engine)  # warm-up
    for name, engine in engines.items():
        if name != "vllm_engine":
            rollout(engine)
    episodes, tokens, calls = None, 0, {}
    for _ in range(args.repeats):
        for name, engine in engines.items():
            eps, rate, stats = rollout(engine)
            results[name].append(rate)
            calls[name] = stats.generation_calls
            if name == "vllm_engine":
                episodes = eps
        results["raw_vllm"].append(raw(episodes))
        results["raw_per_turn"].append(raw_per_turn(episodes))
    tokens = sum(ep.num_generated_tokens for ep in episodes)
    summary = {name: statistics.median(rates) for name, rates in results.items()}
    report = {
        "setup": {**vars(args), "dialogues": len(episodes), "agent_tokens": tokens,
                  "agent_turns": sum(ep.num_turns for ep in episodes),
                  "load_average_1min": {"start": load_start, "end": os.getloadavg()[0]}},
        "tokens_per_s": summary,
        "efficiency": summary["vllm_engine"] / summary["raw_per_turn"],
        "efficiency_per_repeat": [e / r for e, r in zip(results["vllm_engine"], results["raw_per_turn"])],
        "efficiency_vs_openings": summary["vllm_engine"] / summary["raw_vllm"],
        "efficiency_vs_openings_per_repeat": [e / r for e, r in zip(results["vllm_engine"], results["raw_vllm"])],
        "vllm_over_transformers": summary["vllm_engine"] / summary["transformers"],
        "generation_calls_or_steps": calls,
        "runs": results,
    }
    print(json.dumps(report, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == "__main__":  # vLLM may spawn processes: keep the guard
    main()
