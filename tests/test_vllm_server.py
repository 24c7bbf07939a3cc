"""vLLM's OpenAI-compatible server, for real (``python -m vllm.entrypoints.openai.api_server`` on a
free loopback port, one per module): the trainer's server mode generates through it and syncs
weights without CUDA (a safetensors folder reloaded through ``/collective_rpc``), and the env's
LLM roles (user simulator, process and quality judges), the LLM agent and the evaluation CLI play
real episodes against it. A random tiny model answers garbage, which drives the roles through
their malformed-reply paths: outcomes must be bounded and recorded."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("vllm")
torch = pytest.importorskip("torch")

from cmpo.engines import SamplingParams, make_engine, stop_token_ids_for  # noqa: E402
from cmpo.engines.vllm_server import VLLMServer  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

LOGPROB_TOL = 2e-3  # nats, float32 on both sides


@pytest.fixture(scope="module")
def vllm_model_dir(tmp_path_factory):
    from cmpo.tiny_model import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("tiny-vllm-server"), hidden=128))


@pytest.fixture(scope="module")
def server(vllm_model_dir):
    with VLLMServer(vllm_model_dir, extra_args=["--dtype", "float32", "--max-model-len", "2048"]) as srv:
        yield srv


def _scored(model, prompt, completion, temperature):
    with torch.no_grad():
        logits = model(torch.tensor([prompt + completion])).logits[0, len(prompt) - 1:-1] / temperature
    return torch.log_softmax(logits.float(), -1).gather(1, torch.tensor(completion)[:, None]).squeeze(1)


def test_server_mode_generates_and_syncs_weights_without_cuda(server, vllm_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(vllm_model_dir)
    tok = AutoTokenizer.from_pretrained(vllm_model_dir)
    sampling = SamplingParams(max_new_tokens=10, temperature=0.8, stop_token_ids=stop_token_ids_for(tok))
    engine = make_engine("vllm", model, tok, sampling, mode="server", server_base_url=server.url)
    prompts = [list(tok.apply_chat_template([{"role": "user", "content": t}], add_generation_prompt=True,
                                            tokenize=True, return_dict=False)) for t in ("hello", "my soup is cold")]
    for prompt, gen in zip(prompts, engine.generate(prompts)):  # log-probs after temperature
        assert torch.allclose(_scored(model, prompt, gen.token_ids, 0.8), torch.tensor(gen.logprobs),
                              atol=LOGPROB_TOL)
    with torch.no_grad():  # an update that moves every weight, the tied embedding included
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    stale = engine.generate(prompts[:1])[0]
    moved = _scored(model, prompts[0], stale.token_ids, 0.8)
    assert (moved - torch.tensor(stale.logprobs)).abs().max() > 20 * LOGPROB_TOL
    engine.sync_weights()
    for prompt, gen in zip(prompts, engine.generate(prompts)):
        assert torch.allclose(_scored(model, prompt, gen.token_ids, 0.8), torch.tensor(gen.logprobs),
                              atol=LOGPROB_TOL)
    # the server is shared by the module: give it back its original weights
    engine.generation.model = AutoModelForCausalLM.from_pretrained(vllm_model_dir)
    engine.sync_weights()


def test_llm_agent_and_llm_user_play_fds_episodes(server):
    import gymnasium as gym

    from interactcs_gym.agents import load_agent

    agent = load_agent("llm", base_url=server.base_url, model=server.model,
                       sampling={"max_tokens": 24}, max_retries=1)
    env = gym.make("FDS-Hard-LLM-v0", max_turns=3, process_judge="rule", user_simulator_kwargs={
        "base_url": server.base_url, "model": server.model, "max_retries": 1, "max_reasks": 1,
        "sampling": {"max_tokens": 32}})
    for user in range(2):
        obs, info = env.reset(seed=user, options={"user_index": user})
        agent.reset(seed=user)
        done = False
        while not done:
            action = agent.act(obs, info)
            assert isinstance(action, str)
            obs, reward, term, trunc, info = env.step(action)
            done = term or trunc
        assert info["satisfaction"] in range(1, 6) and reward == (info["satisfaction"] - 1) / 4
        assert info["termination_reason"] in ("satisfied", "refused", "max_turns", "simulator_error")
    env.close()


def test_both_llm_judges_score_through_the_server(server, tmp_path):
    import gymnasium as gym

    from interactcs_gym.agents import load_agent
    from interactcs_gym.evaluation import cli

    judge_kwargs = {"base_url": server.base_url, "model": server.model, "max_retries": 1,
                    "max_reasks": 1, "sampling": {"max_tokens": 16, "temperature": 1.0}}
    env = gym.make("FDS-Hard-v0", max_turns=2, process_judge="llm", process_judge_kwargs=judge_kwargs)
    sop = load_agent("sop")
    obs, info = env.reset(seed=0, options={"user_index": 5})
    sop.reset(seed=0)
    obs, reward, term, trunc, info = env.step(sop.act(obs, info))
    assert 0.0 <= info["process_reward"] <= 1.0
    assert set(info["process_scores"]) == {p.name for p in env.unwrapped.process_judge.principles}
    env.close()
    out = tmp_path / "sop.jsonl"  # the quality judge, through the evaluation CLI
    assert cli.main(["--env", "FDS-Hard-v0", "--agent", "sop", "--users", "2", "--seeds", "1",
                     "--quality-judge", "llm", "--quality-judge-kwargs", json.dumps(judge_kwargs),
                     "--out", str(out), "--no-progress", "--quiet"]) == 0
    episodes = [r for r in map(json.loads, out.read_text().splitlines()) if r["record"] == "episode"]
    assert len(episodes) == 2
    assert all(0 <= r["quality"]["comm_total"] <= 28 and 0 <= r["quality"]["logic_total"] <= 12
               for r in episodes)


def test_evaluation_cli_with_the_llm_agent(server, tmp_path):
    from interactcs_gym.evaluation import cli

    out = tmp_path / "llm.jsonl"
    agent_kwargs = {"base_url": server.base_url, "model": server.model, "max_retries": 1,
                    "sampling": {"max_tokens": 16}}
    assert cli.main(["--env", "FDS-Hard-v0", "--env-kwargs", '{"max_turns": 2}', "--agent", "llm",
                     "--agent-kwargs", json.dumps(agent_kwargs), "--users", "2", "--seeds", "2",
                     "--out", str(out), "--no-progress", "--quiet"]) == 0
    episodes = [r for r in map(json.loads, out.read_text().splitlines()) if r["record"] == "episode"]
    assert len(episodes) == 4 and all(r["status"] == "ok" for r in episodes)


def test_cmpo_trains_in_server_mode_through_the_cli(server, vllm_model_dir, tmp_path):
    """Two CMPO steps generating on the server; after step 1's update the weights go to the server,
    so step 2's rollout log-probs are the training model's (approx-KL ~0)."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "cmpo.train", "--config", "examples/cmpo_tiny_cpu.yaml",
           "--engine", "vllm", "--vllm_mode", "server", "--vllm_server_base_url", server.url,
           "--model_name_or_path", vllm_model_dir, "--output_dir", str(out),
           "--max_steps", "2", "--warmup_ratio", "0", "--learning_rate", "1e-3",
           "--lr_scheduler_type", "constant", "--max_new_tokens", "24", "--max_seq_len", "2048",
           "--report_to", "none", "--plot", "false", "--disable_tqdm", "true", "--save_steps", "0",
           # one update per step, so step 2's approx-KL compares the engine's rollout log-probs with
           # the synced training model before any further update (the example does 2 x 2)
           "--num_epochs", "1", "--num_mini_batches", "1", "--beta", "0"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900,
                          env=dict(os.environ, PYTHONPATH=os.getcwd()))
    assert proc.returncode == 0, proc.stderr[-4000:]
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == [1, 2] and steps[0]["train/lr"] > 0
    assert steps[1]["loss/approx_kl"] < 1e-4
