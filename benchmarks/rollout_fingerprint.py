"""A fingerprint of what a fixed-seed rollout samples: the SHA-256 of every dialogue's token ids,
sampled-token log-probs (rounded to 4 decimals) and turn spans.

A refactoring of the rollout path (engine, cache, scheduler, collector) must leave it unchanged:
run it before and after and compare. It depends on the torch / transformers versions and on the
machine's kernels, so it is a before/after check on one machine, not a constant to test against.
The tiny model's tokenizer is trained on the suite's data files (``cmpo.tiny_model.data_corpus``),
so a change of those data changes it: to compare two versions of the code safely, build the model
once and pass the same ``--model-dir`` to both runs (it is built there when the folder does not
exist)::

    python benchmarks/rollout_fingerprint.py --model-dir /tmp/fingerprint-model   # before the change
    python benchmarks/rollout_fingerprint.py --model-dir /tmp/fingerprint-model   # after it

Two collections, both on the tiny local Qwen2 (random weights, ``cmpo.tiny_model``): the engine's
default path (compaction and joined turns) and the turn-synchronous one (``join_turns=False``);
then one batched ``generate`` with ``max_batch_size`` (the chunked path).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path


def fingerprint(env_id: str, groups: int, group_size: int, max_new_tokens: int, seed: int,
                model_dir: str | None = None) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import interactcs_gym  # noqa: F401  (registers the suite's env ids)
    from cmpo.engines import SamplingParams, make_engine, stop_token_ids_for
    from cmpo.rollout import RolloutCollector
    from cmpo.tiny_model import build_tiny_model

    torch.set_num_threads(1)
    out: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(model_dir) if model_dir else Path(tmp) / "tiny"
        if not model_dir.exists():
            build_tiny_model(model_dir)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir)
        sampling = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.9, top_k=50, top_p=0.95,
                                  stop_token_ids=stop_token_ids_for(tokenizer))
        for name, settings in {"joined": {}, "turn_synchronous": {"join_turns": False}}.items():
            engine = make_engine("transformers", model, tokenizer, sampling, **settings)
            collector = RolloutCollector(env_id, engine, tokenizer, group_size=group_size)
            torch.manual_seed(seed)
            episodes = collector.collect(list(range(seed, seed + groups)))
            collector.close()
            out[name] = _digest([(ep.token_ids, ep.logprobs, ep.turn_spans) for ep in episodes])
        chunked = make_engine("transformers", model, tokenizer, sampling, max_batch_size=3)
        prompts = [tokenizer.apply_chat_template([{"role": "user", "content": text}],
                                                 add_generation_prompt=True, tokenize=True, return_dict=False)
                   for text in ["hello", "my soup is cold", "where is my order", "refund please",
                                "the rider was rude", "thanks", "x"]]
        torch.manual_seed(seed)
        out["chunked"] = _digest([(g.token_ids, g.logprobs, []) for g in chunked.generate(prompts)])
    out["all"] = hashlib.sha256("".join(out[k] for k in sorted(out)).encode()).hexdigest()
    return out


def _digest(records) -> str:
    h = hashlib.sha256()
    for ids, logprobs, spans in records:
        h.update(json.dumps([list(ids), [round(float(x), 4) for x in logprobs],
                             [list(s) for s in spans]]).encode())
    return h.hexdigest()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="FDS-Hard-v0")
    parser.add_argument("--groups", type=int, default=3)
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model-dir", default=None,
                        help="tiny model folder to use (built there if missing); default: a fresh one")
    args = parser.parse_args(argv)
    result = fingerprint(args.env, args.groups, args.group_size, args.max_new_tokens, args.seed,
                         args.model_dir)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
