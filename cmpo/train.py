"""Train an LLM policy with CMPO against a registered Gymnasium text env.

    accelerate launch -m cmpo.train --config examples/cmpo_tiny_cpu.yaml [--key value ...]
    python -m cmpo.train --config examples/cmpo_tiny_cpu.yaml --max_steps 5
    accelerate launch --config_file examples/accelerate/zero2.yaml -m cmpo.train \\
        --config examples/cmpo_qwen2.5-7b_fds.yaml

The YAML file sets defaults, command-line flags override them; unknown keys are errors.
``--resume`` continues from the newest complete checkpoint of ``output_dir``.
``python -m cmpo.train --help`` lists every setting (:class:`cmpo.config.CMPOConfig`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from cmpo.config import CMPOConfig, check_keys


def make_parser():
    """TRL's parser (``HfArgumentParser`` + ``--config`` YAML defaults) over :class:`CMPOConfig`."""
    from trl import TrlParser

    return TrlParser(CMPOConfig, description=__doc__.split("\n\n")[0])


def parse_config(argv: list[str] | None = None) -> CMPOConfig:
    """``--config file.yaml`` + ``--key value`` flags -> a validated :class:`CMPOConfig`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise SystemExit("--config needs a path to a YAML file")
        path = Path(argv[i + 1])
        if not path.is_file():
            raise SystemExit(f"--config: no such file: {path}")
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise SystemExit(f"{path}: expected a YAML mapping of config keys")
        try:
            check_keys([k for k in data if k != "env"], str(path))
        except ValueError as exc:
            raise SystemExit(str(exc)) from None
    (config,) = make_parser().parse_args_and_config(argv)
    return config


def main(argv: list[str] | None = None) -> None:
    try:
        config = parse_config(argv)
    except ValueError as exc:  # raised by CMPOConfig.__post_init__: the message says what to fix
        raise SystemExit(f"invalid config: {exc}") from None
    from cmpo.trainer import CMPOTrainer

    CMPOTrainer(config).train()


if __name__ == "__main__":
    main()
