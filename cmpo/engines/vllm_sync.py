"""Loading the trainer's weights into a vLLM model that has already served, on any platform.

TRL's colocated sync calls ``model.load_weights`` tensor by tensor. That works where vLLM keeps
its linear layers' weights as loaded (CUDA), but vLLM's CPU backend repacks each linear weight for
its own GEMM kernels after loading (``dispatch_cpu_unquantized_gemm``) and leaves an empty
parameter behind, which cannot take a per-tensor load (``'Parameter' object has no attribute
'weight_loader'``). :func:`reload_weights` goes through the model runner's ``reload_weights``
instead, which restores every layer, loads the checkpoint-format tensors and runs each layer's
post-load processing (the repacking) again.

One more step is needed for tied embeddings (``tie_word_embeddings``, as Qwen2.5 0.5B-3B and the
tiny test model have): the ``lm_head`` shares the embedding's weight parameter, but the layer-wise
reload gives the embedding a new parameter, and the ``lm_head``'s packed GEMM handle is built
from the old one, so the logits would still come from the old weights (log-probs off by up to
1.6 nats after one update). :func:`reload_weights` ties the ``lm_head`` to the new embedding
weight and runs its post-load processing again.

The same function serves a vLLM server: :class:`WeightSyncExtension` is a worker extension
(``--worker-extension-cls cmpo.engines.vllm_sync.WeightSyncExtension``) whose
``cmpo_reload_weights(path)`` the trainer calls through the server's ``/collective_rpc`` endpoint
after saving its weights to ``path``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def reload_weights(model_runner: Any, weights: Iterable[tuple[str, Any]] | None = None, *,
                   weights_path: str | None = None) -> None:
    """Load ``weights`` (``(name, tensor)`` pairs in checkpoint format, e.g. a Hugging Face model's
    ``named_parameters()``) or the safetensors folder ``weights_path`` into the model of vLLM's
    ``model_runner``, then redo the tied ``lm_head``'s post-load processing."""
    if (weights is None) == (weights_path is None):
        raise ValueError("give exactly one of weights and weights_path")
    model_runner.reload_weights(weights_iterator=None if weights is None else iter(weights),
                                weights_path=weights_path)
    model = model_runner.get_model()
    lm_head = getattr(model, "lm_head", None)
    embed = getattr(getattr(model, "model", None), "embed_tokens", None)
    tied = getattr(getattr(model, "config", None), "tie_word_embeddings", False)
    if tied and embed is not None and hasattr(lm_head, "quant_method"):
        lm_head.weight = embed.weight
        lm_head.quant_method.process_weights_after_loading(lm_head)


class WeightSyncExtension:
    """vLLM worker extension: ``collective_rpc("cmpo_reload_weights", args=(path,))`` loads the
    safetensors folder ``path`` into the served model (see :func:`reload_weights`)."""

    def cmpo_reload_weights(self, weights_path: str) -> None:
        reload_weights(self.model_runner, weights_path=weights_path)


def checkpoint_params(model):
    """``(name, tensor)`` of ``model``'s weights under their checkpoint names; a PEFT model's
    weights come with its adapters merged (copies: the adapters are unmerged after)."""
    if not hasattr(model, "merge_adapter"):
        yield from ((name, param.data) for name, param in model.named_parameters())
        return
    model.merge_adapter()
    try:
        for name, param in model.named_parameters():
            name = name.removeprefix("base_model.model.").replace(".base_layer", "")
            if model.prefix in name or "original_module" in name:
                continue
            yield name.replace("modules_to_save.default.", ""), param.data.clone()
    finally:
        model.unmerge_adapter()
