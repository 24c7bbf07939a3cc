"""CMPOConfig and the CLI parser: YAML defaults, CLI overrides, unknown keys, validation messages."""

from __future__ import annotations

import pytest
import yaml

pytest.importorskip("trl")

from cmpo.config import CMPOConfig  # noqa: E402
from cmpo.train import main, parse_config  # noqa: E402


def _yaml(tmp_path, data):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_yaml_sets_defaults_and_flags_override(tmp_path):
    path = _yaml(tmp_path, {"group_size": 4, "groups_per_step": 2, "learning_rate": 1, "cost_limit": 0.25,
                            "env_kwargs": {"split": "train"}, "report_to": "none"})
    cfg = parse_config(["--config", path, "--group_size", "2", "--env_kwargs", '{"split": "test"}'])
    assert (cfg.group_size, cfg.groups_per_step, cfg.cost_limit) == (2, 2, 0.25)
    assert cfg.learning_rate == 1.0 and isinstance(cfg.learning_rate, float)  # YAML int -> float
    assert cfg.env_kwargs == {"split": "test"} and cfg.report_to == []
    assert parse_config(["--config", path, "--resume"]).resume is True


def test_unknown_keys_are_errors_with_a_suggestion(tmp_path):
    with pytest.raises(SystemExit, match=r"'lerning_rate' \(did you mean 'learning_rate'\?\)"):
        parse_config(["--config", _yaml(tmp_path, {"lerning_rate": 1e-5})])
    with pytest.raises(ValueError, match="--group_sise"):
        parse_config(["--group_sise", "3"])


@pytest.mark.parametrize("kwargs,message", [
    ({"group_size": 0}, "group_size must be >= 1"),
    ({"cost_limit": -0.1}, "cost_limit must be >= 0"),
    ({"temperature": 0.0}, "temperature must be > 0"),
    ({"epsilon_low": 1.5}, "epsilon_low must be < 1"),
    ({"warmup_ratio": 1.0}, r"warmup_ratio must be in \[0, 1\)"),
    ({"env_kwargs": "{split: train}"}, "env_kwargs must be a JSON object"),
    ({"max_seq_len": 100, "max_new_tokens": 200}, "max_seq_len .* must exceed max_new_tokens"),
    ({"learning_rate": "fast"}, "learning_rate must be a number"),
    ({"max_steps": 2.5}, "max_steps must be an integer"),
    ({"lambda_init": 2.0, "lambda_max": 1.0}, "lambda_max .* must be >= lambda_init"),
])
def test_validation_says_what_to_fix(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CMPOConfig(**kwargs)


def test_batch_split_is_checked():
    cfg = CMPOConfig(groups_per_step=3, group_size=2, micro_batch_size=4)
    with pytest.raises(ValueError, match="multiple of num_mini_batches x micro_batch_size"):
        cfg.check_batch(1)
    with pytest.raises(ValueError, match="multiple of the number of processes"):
        cfg.check_batch(2)
    ok = CMPOConfig(groups_per_step=4, group_size=8, micro_batch_size=2, num_mini_batches=2)
    ok.check_batch(2)
    assert ok.gradient_accumulation_steps(2) == 4  # 16 episodes per process / (2 x 2)


def test_controller_and_estimator_arguments():
    cfg = CMPOConfig(cost_controller="pid", pid_kp=2.0, cost_limit=0.3, estimator="capo", w_o=None)
    assert cfg.controller_kwargs()["kp"] == 2.0
    assert "w_o" not in cfg.estimator_kwargs()  # the estimator's own default (capo: 2.0)
    assert CMPOConfig(cost_controller="fixed", fixed_lambda=0.7).controller_kwargs() == \
        {"lam": 0.7, "cost_limit": 0.3}
    from cmpo.lagrangian import make_cost_controller

    for name in ("pid", "lagrangian", "fixed", "none"):
        cfg = CMPOConfig(cost_controller=name)
        assert make_cost_controller(name, **cfg.controller_kwargs()).lam >= 0
    assert CMPOConfig(estimator="grpo").estimator_kwargs() == {"sum_norm": False, "use_cost": True}


def test_cli_reports_invalid_values_without_a_traceback(tmp_path):
    with pytest.raises(SystemExit, match="invalid config: group_size must be >= 1"):
        main(["--config", _yaml(tmp_path, {"group_size": 0})])


def test_help_lists_every_field(capsys):
    from dataclasses import fields

    with pytest.raises(SystemExit):
        parse_config(["--help"])
    out = capsys.readouterr().out
    assert all(f"--{f.name}" in out for f in fields(CMPOConfig))
