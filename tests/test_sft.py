"""SFT cold start: demonstrations written by a scripted agent, fine-tuning on agent tokens only."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("trl")
torch = pytest.importorskip("torch")

from cmpo.sft import demonstrations, main  # noqa: E402
from tests.toy_text_env import ToyKeywordEnv, register_toy_env  # noqa: E402


pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")

AGENT = "tests.toy_text_env:ToyAgent"


def test_demonstrations_are_chat_dialogues_ending_with_the_agent(tmp_path):
    env_id = register_toy_env()
    rows = list(demonstrations(env_id, AGENT, 3, seed=5, env_kwargs={"max_turns": 3}))
    assert [r["seed"] for r in rows] == [5, 6, 7]
    env = ToyKeywordEnv()
    for row in rows:
        env.reset(seed=row["seed"])
        assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant", "user", "assistant"]
        assert row["messages"][-1]["content"] == env.word
        assert row["reward"] == 1.0 and row["cost"] == 0.0
    kept = list(demonstrations(env_id, AGENT, 3, env_kwargs={"max_turns": 1}, min_reward=0.5))
    assert kept == []  # one turn is not enough to say the word: every dialogue filtered out


def test_data_command_writes_jsonl(tmp_path):
    out = tmp_path / "demos.jsonl"
    main(["data", "--env", "tests.toy_text_env:ToyKeyword-v0", "--agent", AGENT, "--episodes", "4",
          "--out", str(out)])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 4 and all(r["messages"][0]["role"] == "system" for r in rows)


@pytest.mark.slow
def test_sft_trains_on_agent_tokens_only(tmp_path, tiny_model_dir):
    from transformers import AutoTokenizer

    from cmpo.sft import SFTScriptArguments, make_train_parser, train

    data = tmp_path / "demos.jsonl"
    main(["data", "--env", "tests.toy_text_env:ToyKeyword-v0", "--agent", AGENT, "--episodes", "8",
          "--out", str(data)])
    script_args, training_args = make_train_parser().parse_args_and_config([
        "--dataset", str(data), "--model_name_or_path", tiny_model_dir, "--output_dir", str(tmp_path / "sft"),
        "--max_steps", "3", "--per_device_train_batch_size", "4", "--learning_rate", "1e-3",
        "--logging_steps", "1", "--use_cpu", "true", "--save_strategy", "no"])
    assert training_args.assistant_only_loss is True and isinstance(script_args, SFTScriptArguments)
    out = train(script_args, training_args)
    assert (out / "config.json").exists()

    # what the loss sees: exactly the agent turns (content + end-of-turn token) of each dialogue
    from trl import SFTTrainer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    from datasets import load_dataset

    ds = load_dataset("json", data_files=str(data), split="train").select_columns(["messages"])
    trainer = SFTTrainer(model=tiny_model_dir, args=training_args, train_dataset=ds)
    example = trainer.train_dataset[0]
    trained = tok.decode([label for label in example["labels"] if label != -100])
    agent_turns = [m["content"] + "<|im_end|>" for m in ds[0]["messages"] if m["role"] == "assistant"]
    assert trained == "".join(agent_turns)
    assert len(example["labels"]) == len(example["input_ids"]) > len(tok.encode(trained))
