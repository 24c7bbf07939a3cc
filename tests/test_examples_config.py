"""Every config shipped in examples/ parses into a valid configuration."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

pytest.importorskip("trl")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("cmpo_*.yaml")), ids=lambda p: p.name)
def test_cmpo_example_configs_are_valid(path):
    from cmpo.train import parse_config

    cfg = parse_config(["--config", str(path)])
    cfg.check_batch(8 if "qwen" in path.name else 1)
    if "qwen" in path.name:  # the paper's setup
        assert (cfg.group_size, cfg.max_turns, cfg.cost_limit, cfg.lr_scheduler_type, cfg.warmup_ratio) == \
            (8, 15, 0.30, "cosine", 0.1)
        assert cfg.groups_per_step == 128 and cfg.engine == "vllm"


def test_sft_example_configs_are_valid():
    from dataclasses import fields

    from trl import SFTConfig

    from cmpo.sft import SFTScriptArguments, make_train_parser

    script_args, training_args = make_train_parser().parse_args_and_config(
        ["--config", str(EXAMPLES / "sft_tiny_cpu.yaml")])
    assert training_args.assistant_only_loss and script_args.dataset.endswith(".jsonl")
    # the GPU config cannot be instantiated without a GPU (bf16): its keys must all be known
    known = {f.name for f in fields(SFTConfig)} | {f.name for f in fields(SFTScriptArguments)}
    assert set(yaml.safe_load((EXAMPLES / "sft_qwen2.5-7b_fds.yaml").read_text())) <= known


@pytest.mark.parametrize("path", sorted((EXAMPLES / "accelerate").glob("*.yaml")), ids=lambda p: p.name)
def test_accelerate_configs(path):
    config = yaml.safe_load(path.read_text())
    assert config["distributed_type"] in ("DEEPSPEED", "FSDP") and config["mixed_precision"] == "bf16"


def test_tiny_cpu_example_runs_the_settings_of_the_reproductions_pid_variant():
    """README: examples/cmpo_tiny_cpu.yaml is the `cmpo-pid` variant of `python -m cmpo.reproduce`
    (its numbers are that row of the report); a setting changed in one must change in the other."""
    from cmpo.reproduce import BASE_CONFIG, FULL, VARIANTS
    from cmpo.train import parse_config

    cfg = parse_config(["--config", str(EXAMPLES / "cmpo_tiny_cpu.yaml")])
    expected = {**BASE_CONFIG, **VARIANTS["cmpo-pid"], "max_steps": FULL.steps}
    for key in ("report_to", "plot", "log_dialogues", "save_total_limit", "save_steps",  # logging
                "lagrangian_lr", "fixed_lambda"):                                        # other controllers
        expected.pop(key)
    assert {k: getattr(cfg, k) for k in expected} == expected
