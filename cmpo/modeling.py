"""Model plumbing of the trainer: loading the policy (optionally LoRA), the reference model, and
scoring token sequences (log-probs of given tokens at given positions, with their entropy)."""

from __future__ import annotations

from pathlib import Path

import torch

from cmpo.config import CMPOConfig


def load_tokenizer(cfg: CMPOConfig):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(cfg.model_name_or_path)
    if cfg.chat_template:
        template = cfg.chat_template
        if "{" not in template and Path(template).is_file():
            template = Path(template).read_text(encoding="utf-8")
        tokenizer.chat_template = template
    if tokenizer.chat_template is None:
        raise ValueError(f"{cfg.model_name_or_path} has no chat template; set chat_template "
                         "(a Jinja template or a path to one)")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_policy(cfg: CMPOConfig):
    """The policy to train: ``AutoModelForCausalLM`` (weights in their saved dtype), with LoRA
    adapters when ``use_peft`` and gradient checkpointing when asked."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(cfg.model_name_or_path, dtype="auto")
    model.config.use_cache = False  # training forward passes; generation turns the cache on itself
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.use_peft:
        from peft import LoraConfig, get_peft_model

        targets = cfg.lora_target_modules
        lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          target_modules=targets[0] if targets == ["all-linear"] else list(targets),
                          task_type="CAUSAL_LM")
        if cfg.gradient_checkpointing:
            model.enable_input_require_grads()
        model = get_peft_model(model, lora)
    return model


def load_reference(cfg: CMPOConfig, accelerator):
    """Frozen copy of the initial policy for the KL term (β > 0, or ppo's ``kl_coef`` > 0);
    ``None`` with LoRA, where the reference is the policy with its adapters disabled."""
    if not cfg.needs_reference or cfg.use_peft:
        return None
    from transformers import AutoModelForCausalLM

    ref = AutoModelForCausalLM.from_pretrained(cfg.model_name_or_path, dtype="auto")
    ref.eval().requires_grad_(False)
    if accelerator.state.deepspeed_plugin is not None:
        from cmpo.compat import prepare_deepspeed_reference

        return prepare_deepspeed_reference(ref, accelerator)
    if accelerator.distributed_type == "FSDP":  # sharded like the policy (then also checkpointed)
        return accelerator.prepare_model(ref, evaluation_mode=True)
    # Not through accelerator.prepare: a prepared model is saved in every checkpoint, and the frozen
    # reference (prepared first) would take model.safetensors and push the policy to model_1.
    return ref.to(accelerator.device)


def score_tokens(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 loss_mask: torch.Tensor, temperature: float, *, with_entropy: bool = False,
                 with_value: bool = False):
    """Log-probs (and entropies) of the tokens at the positions where ``loss_mask`` is set.

    Only the logits that predict a masked token are computed (``logits_to_keep``): in a long
    dialogue most positions are prompt and user tokens, which need no vocabulary projection.
    Returns ``(logp, entropy, cols)``: ``(B, K)`` tensors over the K token columns ``cols`` (the
    union of masked columns of the batch; ``loss_mask[:, cols]`` says which entries are valid).
    ``with_value`` (a :class:`cmpo.value.PolicyWithValueHead`): ``(logp, entropy, cols, value)``,
    ``value[:, k]`` the value of the state in which token ``cols[k]`` was sampled.
    """
    from cmpo.compat import entropy_from_logits, selective_log_softmax

    cols = torch.nonzero(loss_mask[:, 1:].any(dim=0)).squeeze(1) + 1  # token columns to score
    if cols.numel() == 0:  # nothing to score: keep one column so that backward still runs
        cols = torch.ones(1, dtype=torch.long, device=input_ids.device)
    out = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=cols - 1,
                use_cache=False, **({"return_value": True} if with_value else {}))
    logits = out.logits.float() / temperature  # (B, K, V): position j-1 predicts token j
    logp = selective_log_softmax(logits, input_ids[:, cols])
    entropy = None
    if with_entropy:
        with torch.no_grad():
            entropy = entropy_from_logits(logits.detach())
    if with_value:
        return logp, entropy, cols, out.value.float()
    return logp, entropy, cols
