"""Build a tiny local chat model: a tokenizer trained on the project's own text, a chat template and
a few-layer Qwen2 (or Llama) config with random weights, saved as an ordinary model folder.

No weights are downloaded: tests, CPU examples and benchmarks use this folder wherever a real
deployment would name a hub id or a local checkpoint (the loading code is the same).

    python -m cmpo.tiny_model runs/tiny-model [--arch qwen2|llama] [--hidden 64] [--layers 2]
"""

from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path

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


def project_corpus() -> list[str]:
    """The project's own text (sources and data files of both packages), in a stable order."""
    texts: list[str] = []
    for pkg in ("interactcs_gym", "cmpo"):
        root = Path(str(resources.files(pkg)))
        for path in sorted(root.rglob("*")):
            if path.suffix in {".py", ".json", ".yaml", ".md", ".txt"} and path.is_file():
                texts.append(path.read_text(encoding="utf-8", errors="replace"))
    texts.append("<think> </think> <response> </response> <action>chat</action> <action>voucher</action>")
    return texts


def build_tokenizer(vocab_size: int = 2048):
    """A byte-level BPE tokenizer trained on :func:`project_corpus`, with the ChatML template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(project_corpus(), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", padding_side="left")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(out_dir: str | Path, *, arch: str = "qwen2", hidden: int = 64,
                     layers: int = 2, heads: int = 4, kv_heads: int = 2, vocab_size: int = 2048,
                     max_positions: int = 8192, seed: int = 0) -> Path:
    """Write tokenizer + config + random weights to ``out_dir`` and return it."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(vocab_size)
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--arch", default="qwen2", choices=["qwen2", "llama"])
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--vocab-size", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    path = build_tiny_model(args.out_dir, arch=args.arch, hidden=args.hidden, layers=args.layers,
                            vocab_size=args.vocab_size, seed=args.seed)
    print(f"tiny model written to {path}")


if __name__ == "__main__":
    main()
