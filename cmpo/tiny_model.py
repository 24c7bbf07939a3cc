"""Build a tiny local chat model: a tokenizer trained on the suite's data files, a chat template and
a few-layer Qwen2 (or Llama) config with random weights, saved as an ordinary model folder.

No weights are downloaded: tests, CPU examples and benchmarks use this folder wherever a real
deployment would name a hub id or a local checkpoint (the loading code is the same).

    python -m cmpo.tiny_model runs/tiny-model [--arch qwen2|llama] [--hidden 64] [--layers 2] [--heads 4]

The head size is ``hidden / heads`` (16 by default). vLLM's CPU attention takes head sizes 32 to
512 only: for the vLLM engine on a CPU build it with ``--hidden 128`` (head size 32).

A random model writes no well-formed agent turn, so it never takes an env's costly action.
:func:`teach_opening_turn` fine-tunes one, in seconds, to say a scripted agent's first turn (e.g.
``always-voucher``: most FDS sessions then cost 1), for tests and CPU demos where the cost
constraint must bind::

    python -m cmpo.tiny_model runs/voucher-model --imitate always-voucher --env FDS-Hard-v0
"""

from __future__ import annotations

import argparse
import json
from importlib import resources
from pathlib import Path
from collections.abc import Iterable
from typing import Any

#: ChatML, as Qwen2.5 uses it; ``{% generation %}`` marks the assistant tokens so that TRL's
#: ``assistant_only_loss`` (and ``return_assistant_tokens_mask``) can find them.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}{% generation %}{{- message['content'] + '<|im_end|>' }}"
    "{% endgeneration %}{{- '\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


#: The agent protocol's tags, so that each is a token or two whatever the data's words.
PROTOCOL_TEXT = "<think> </think> <response> </response> <action>chat</action> <action>voucher</action>"


def data_corpus(extra: Iterable[str] = ()) -> list[str]:
    """The suite's data files (every ``data/*.json`` and ``data/*.yaml`` of ``interactcs_gym``:
    orders, personas, utterance banks, lexicons), in a stable order, the protocol's tags and
    ``extra`` (e.g. demonstration dialogues).

    Data, not code: the tokenizer (and so a tiny model built with a seed) stays the same when the
    project's sources change, and changes only with the data it is trained on."""
    root = Path(str(resources.files("interactcs_gym")))
    texts = [path.read_text(encoding="utf-8") for path in sorted(root.rglob("data/*"))
             if path.suffix in {".json", ".yaml"} and path.is_file()]
    return [*texts, PROTOCOL_TEXT, *extra]


def build_tokenizer(vocab_size: int = 2048, extra_texts: Iterable[str] = ()):
    """A byte-level BPE tokenizer trained on :func:`data_corpus` (with ``extra_texts``), with the
    ChatML template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(data_corpus(extra_texts), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", padding_side="left")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(out_dir: str | Path, *, arch: str = "qwen2", hidden: int = 64,
                     layers: int = 2, heads: int = 4, kv_heads: int = 2, vocab_size: int = 2048,
                     max_positions: int = 8192, seed: int = 0, extra_texts: Iterable[str] = ()) -> Path:
    """Write tokenizer + config + random weights to ``out_dir`` and return it; the tokenizer is
    trained on :func:`data_corpus` with ``extra_texts``.

    The head size is ``hidden // heads``; ``hidden`` must be a multiple of ``heads``, and ``heads``
    of ``kv_heads``."""
    if hidden % heads or heads % kv_heads:
        raise ValueError(f"hidden ({hidden}) must be a multiple of heads ({heads}), and heads of "
                         f"kv_heads ({kv_heads})")
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(vocab_size, extra_texts)
    common = dict(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                  num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                  max_position_embeddings=max_positions, tie_word_embeddings=True,
                  bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
                  eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    if arch == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**common))
    elif arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common))
    else:
        raise ValueError(f"arch must be 'qwen2' or 'llama', got {arch!r}")
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id,
                                               do_sample=True, temperature=1.0, max_new_tokens=64)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def opening_turns(tokenizer, env_id: str, agent: str, episodes: int, *, seed: int = 0,
                  env_kwargs: dict[str, Any] | None = None) -> list[tuple[list[int], list[int]]]:
    """``(prompt ids, completion ids)`` of ``agent``'s first turn in ``episodes`` resets of ``env_id``
    (seeds ``seed, seed+1, ...``): the chat-templated opening with the generation prompt, and the
    agent's text followed by the template's end-of-turn token (``tokenizer.eos_token``)."""
    import gymnasium as gym

    import interactcs_gym  # noqa: F401  (registers the suite's env ids)
    from interactcs_gym.agents.registry import load_agent
    from interactcs_gym.evaluation.episode import play_episode

    env = gym.make(env_id, **(env_kwargs or {}))
    policy = load_agent(agent)
    pairs = []
    try:
        for i in range(episodes):
            episode = play_episode(env, policy, seed=seed + i, stop_after=1)
            if episode["status"] != "ok" or not episode["turns"]:
                raise RuntimeError(f"opening {i} of {agent!r} on {env_id}: {episode['status']} "
                                   f"({episode['error']})")
            *opening, first = episode["messages"][:-1]  # the opening, then the agent's first turn
            prompt = tokenizer.apply_chat_template(opening, add_generation_prompt=True, tokenize=True,
                                                   return_dict=False)
            text = first["content"] + tokenizer.eos_token
            pairs.append((list(prompt), tokenizer(text, add_special_tokens=False)["input_ids"]))
    finally:
        env.close()
    return pairs


def _imitation_loss(model, batch, pad_token_id: int, context: int | None):
    """Mean cross-entropy of the completions given (the last ``context`` tokens of) their prompts.

    Rows are left-padded so that every completion ends at the last column; positions are the
    tokens' positions in the whole dialogue, so a cut prompt is seen where it would be."""
    import torch

    rows = []
    for prompt, completion in batch:
        cut = 0 if context is None else max(0, len(prompt) - context)
        rows.append((prompt[cut:] + completion, cut))
    width = max(len(ids) for ids, _ in rows)
    keep = max(len(c) for _, c in batch)
    ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    positions = torch.zeros_like(ids)
    mask = torch.zeros_like(ids)
    labels = torch.full((len(rows), keep), -100, dtype=torch.long)
    for r, ((seq, cut), (_, completion)) in enumerate(zip(rows, batch)):
        ids[r, width - len(seq):] = torch.tensor(seq)
        positions[r, width - len(seq):] = torch.arange(cut, cut + len(seq))
        mask[r, width - len(seq):] = 1
        labels[r, keep - len(completion):] = torch.tensor(completion)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions,
                   logits_to_keep=keep + 1).logits[:, :-1]  # the logits that predict the last `keep`
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                                             labels.reshape(-1), ignore_index=-100)


def teach_opening_turn(model_dir: str | Path, out_dir: str | Path, *, agent: str = "always-voucher",
                       env_id: str = "FDS-Hard-v0", env_kwargs: dict[str, Any] | None = None,
                       episodes: int = 16, short_steps: int = 150, full_steps: int = 100,
                       context: int = 32, learning_rate: float = 3e-3, seed: int = 0) -> Path:
    """Fine-tune the model of ``model_dir`` to say ``agent``'s first turn of ``env_id`` and save it to
    ``out_dir`` (for tiny models: seconds on a CPU).

    Maximum likelihood of the completions of :func:`opening_turns` (``episodes`` resets) with Adam
    at a high learning rate: first ``short_steps`` steps of 4 examples that see only the last
    ``context`` tokens of their prompt (cheap: the text is learnt), then ``full_steps`` steps of one
    example on its whole prompt (the model learns to say it after the env's long opening too; one
    unpadded row keeps CPU attention on its fast path). With the defaults, a 2-layer, 64-wide
    model takes ~6 s of one CPU core, and under temperature-1 sampling ~3 in 4 of its first FDS-Hard-v0
    turns are the always-voucher agent's turn (122 of 160 train sessions, 72 new tokens a turn; the
    rest are near misses).
    """
    import random

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    examples = opening_turns(tokenizer, env_id, agent, episodes, env_kwargs=env_kwargs)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    rng = random.Random(seed)
    torch.manual_seed(seed)
    model.train()
    for step in range(short_steps + full_steps):
        short = step < short_steps
        batch = rng.sample(examples, min(len(examples), 4)) if short else [rng.choice(examples)]
        loss = _imitation_loss(model, batch, tokenizer.pad_token_id, context if short else None)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    out = Path(out_dir)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--arch", default="qwen2", choices=["qwen2", "llama"])
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4, help="attention heads (head size = hidden / heads)")
    parser.add_argument("--vocab-size", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--imitate", default=None, metavar="AGENT",
                        help="then teach it AGENT's first turn in --env (e.g. always-voucher)")
    parser.add_argument("--env", default="FDS-Hard-v0", help="env of --imitate")
    parser.add_argument("--env_kwargs", default='{"split": "train"}', help="JSON kwargs of gym.make")
    args = parser.parse_args(argv)
    path = build_tiny_model(args.out_dir, arch=args.arch, hidden=args.hidden, layers=args.layers,
                            heads=args.heads, vocab_size=args.vocab_size, seed=args.seed)
    if args.imitate:
        teach_opening_turn(path, path, agent=args.imitate, env_id=args.env,
                           env_kwargs=json.loads(args.env_kwargs), seed=args.seed)
        print(f"tiny model taught {args.imitate}'s first turn in {args.env}")
    print(f"tiny model written to {path}")


if __name__ == "__main__":
    main()
