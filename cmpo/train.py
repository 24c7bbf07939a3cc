"""Train an LLM policy with CMPO against a registered Gymnasium text env.

    accelerate launch -m cmpo.train --config examples/cmpo_tiny_cpu.yaml [--key value ...]
    python -m cmpo.train --config examples/cmpo_tiny_cpu.yaml --max_steps 5
    accelerate launch --config_file examples/accelerate/zero2.yaml -m cmpo.train \\
        --config examples/cmpo_qwen2.5-7b_fds.yaml

The YAML file sets defaults, command-line flags override them; unknown keys are errors.
``--resume`` continues from the newest complete checkpoint of ``output_dir``.
``python -m cmpo.train --help`` lists every setting (:class:`cmpo.config.CMPOConfig`).

Bad input (a config value, a missing model, an env id that is not registered or not a text env,
a damaged checkpoint, the training extra not installed) stops the run with one line on stderr
and exit status 1, before the model is loaded where it can be checked; ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from cmpo.config import CMPOConfig, check_keys

#: Modules of the ``train`` extra; one missing means the light install.
TRAIN_EXTRA = ("torch", "transformers", "trl", "accelerate")


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


def check_text_env(env_id: str, env_kwargs: dict) -> None:
    """ValueError unless ``gym.make(env_id, **env_kwargs)`` builds an env with text observations
    and actions (``UnicodeText`` or ``gymnasium.spaces.Text``), which CMPO's rollouts need."""
    import gymnasium as gym

    import interactcs_gym  # noqa: F401  (registers the suite's env ids)
    from interactcs_gym.core.spaces import UnicodeText

    try:
        env = gym.make(env_id, **env_kwargs)
    except gym.error.Error as exc:
        raise ValueError(f"env_id {env_id!r}: {exc}") from None
    except ImportError as exc:
        raise ValueError(f"env_id {env_id!r}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise ValueError(f"env_id {env_id!r} with env_kwargs {env_kwargs}: {exc}") from None
    try:
        spaces = {"observation": env.observation_space, "action": env.action_space}
    finally:
        env.close()
    wrong = {k: v for k, v in spaces.items() if not isinstance(v, (UnicodeText, gym.spaces.Text))}
    if wrong:
        raise ValueError(f"env_id {env_id!r} is not a text env: CMPO needs string observations and "
                         "actions, but its " + " and ".join(f"{k} space is {v}" for k, v in wrong.items()))


def check_model_path(config: CMPOConfig) -> None:
    """ValueError when ``model_name_or_path`` names a local folder (``/``, ``./``, ``../``, ``~``)
    that does not exist and ``build_tiny_model`` will not create it."""
    path = Path(config.model_name_or_path).expanduser()
    local = str(config.model_name_or_path).startswith(("/", "./", "../", "~", "."))
    if local and not config.build_tiny_model and not path.exists():
        raise ValueError(f"model_name_or_path: no such folder: {config.model_name_or_path}")


def run(argv: list[str]) -> None:
    """Parse, check what can be checked before loading the model, train."""
    try:
        config = parse_config(argv)
    except ValueError as exc:  # raised by CMPOConfig.__post_init__: the message says what to fix
        raise SystemExit(f"invalid config: {exc}") from None
    check_model_path(config)
    check_text_env(config.env_id, config.env_kwargs)
    from cmpo.trainer import CMPOTrainer

    CMPOTrainer(config).train()


def main(argv: list[str] | None = None) -> None:
    """The console script: :func:`run`, with one line on stderr for any error (``--debug``: the
    traceback)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    try:
        run(argv)
    except Exception as exc:
        if debug:
            raise
        if isinstance(exc, ModuleNotFoundError) and exc.name in TRAIN_EXTRA:
            raise SystemExit(f"error: cmpo.train needs the training extra ({exc.name} is not installed): "
                             "pip install 'interactcs-rl[train]'") from None
        raise SystemExit(f"error: {_one_line(exc)} (rerun with --debug for the traceback)") from None


def _one_line(exc: BaseException) -> str:
    """The first line of the message; foreign exceptions keep their type name."""
    from cmpo.checkpoint import CheckpointError

    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    return text if text and isinstance(exc, (ValueError, CheckpointError)) else f"{type(exc).__name__}: {text}"


if __name__ == "__main__":
    main()
