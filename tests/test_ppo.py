"""The token-level PPO baseline (issue 12): GAE over the agent tokens, the clipped value loss and the
per-token rewards against hand-computed numbers; the value head (one forward, saving, learning);
``--estimator ppo`` through the real CLI with an exact resume."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

from cmpo.config import CMPOConfig  # noqa: E402
from cmpo.ppo import PPOAdvantages, clipped_value_loss, masked_gae, token_rewards  # noqa: E402
from cmpo.rollout import Episode  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


# -- GAE -----------------------------------------------------------------------------------------
def test_gae_on_three_tokens_by_hand():
    """r = (0, 0, 1), V = (0.5, 0.4, 0.8), γ = 0.9, λ = 0.5, V_4 = 0:
    δ_3 = 1 + 0.9·0 − 0.8 = 0.2          A_3 = 0.2
    δ_2 = 0 + 0.9·0.8 − 0.4 = 0.32       A_2 = 0.32 + 0.45·0.2 = 0.41
    δ_1 = 0 + 0.9·0.4 − 0.5 = −0.14      A_1 = −0.14 + 0.45·0.41 = 0.0445
    returns = A + V = (0.5445, 0.81, 1.0)."""
    adv, ret = masked_gae([0.0, 0.0, 1.0], [0.5, 0.4, 0.8], [True, True, True], gamma=0.9, lam=0.5)
    assert adv == pytest.approx([0.0445, 0.41, 0.2])
    assert ret == pytest.approx([0.5445, 0.81, 1.0])


def test_gae_skips_user_tokens_between_turns():
    """Row 0: prompt, turn 1 (positions 1-2), user reply (3-4), turn 2 (5-6), padding (7). The user
    positions hold value 9.0: were they steps, δ_2 would use it. The recursion runs over the four
    agent tokens r = (0, −0.5, 0, 1), V = (0.1, 0.2, 0.3, 0.4), γ = 1, λ = 0.5:
    δ = (0.2 − 0.1, −0.5 + 0.3 − 0.2, 0.4 − 0.3, 1 − 0.4) = (0.1, −0.4, 0.1, 0.6)
    A_4 = 0.6, A_3 = 0.1 + 0.3 = 0.4, A_2 = −0.4 + 0.2 = −0.2, A_1 = 0.1 − 0.1 = 0.0
    returns = (0.1, 0.0, 0.7, 1.0). Row 1 (shorter, one agent token): A = 1 − 0.25 = 0.75."""
    mask = np.array([[0, 1, 1, 0, 0, 1, 1, 0],
                     [0, 0, 1, 0, 0, 0, 0, 0]], dtype=bool)
    rewards = np.array([[0, 0, -0.5, 0, 0, 0, 1.0, 0],
                        [0, 0, 1.0, 0, 0, 0, 0, 0]])
    values = np.array([[9, 0.1, 0.2, 9, 9, 0.3, 0.4, 9],
                       [9, 9, 0.25, 9, 9, 9, 9, 9]])
    adv, ret = masked_gae(rewards, values, mask, gamma=1.0, lam=0.5)
    assert adv[0] == pytest.approx([0, 0.0, -0.2, 0, 0, 0.4, 0.6, 0])
    assert ret[0] == pytest.approx([0, 0.1, 0.0, 0, 0, 0.7, 1.0, 0])
    assert adv[1] == pytest.approx([0, 0, 0.75, 0, 0, 0, 0, 0])
    assert ret[1] == pytest.approx([0, 0, 1.0, 0, 0, 0, 0, 0])


def test_gae_refuses_a_reward_on_a_user_token():
    with pytest.raises(ValueError, match=r"rewards\[0, 0\] = 1.0 sits on a masked-out token"):
        masked_gae([[1.0, 0.0]], [[0.0, 0.0]], [[False, True]], gamma=1.0, lam=0.95)
    with pytest.raises(ValueError, match="one shape"):
        masked_gae([[0.0, 0.0]], [[0.0]], [[True, True]], gamma=1.0, lam=0.95)
    with pytest.raises(ValueError, match=r"gamma must be in \[0, 1\]"):
        masked_gae([0.0], [0.0], [True], gamma=1.5, lam=0.95)


# -- value loss ----------------------------------------------------------------------------------
def test_clipped_value_loss_by_hand():
    """ε_v = 0.2. Token 1: V = 1.0, V_old = 0.5, R = 2.0 → V_clip = 0.7; (V − R)² = 1,
    (V_clip − R)² = 1.69: the clipped term wins, ℓ = 0.845, no gradient. Token 2: V = 0.9,
    V_old = 0.4, R = 0 → V_clip = 0.6; 0.81 vs 0.36: the unclipped term wins, ℓ = 0.405,
    dℓ/dV = V − R = 0.9. Token 3 is masked (NaN targets ignored). loss = (0.845 + 0.405)/2 = 0.625."""
    values = torch.tensor([[1.0, 0.9, 3.0]], requires_grad=True)
    old = torch.tensor([[0.5, 0.4, float("nan")]])
    returns = torch.tensor([[2.0, 0.0, float("nan")]])
    mask = torch.tensor([[True, True, False]])
    loss, stats = clipped_value_loss(values, old, returns, mask, cliprange_value=0.2)
    assert loss.item() == pytest.approx(0.625)
    assert stats == pytest.approx({"value_loss": 0.625, "value_clip_fraction": 0.5})
    loss.backward()
    assert values.grad[0].tolist() == pytest.approx([0.0, 0.45, 0.0])  # 0.9 / N, N = 2
    # num_tokens (gradient accumulation) divides by the mini-batch's count instead
    loss4, _ = clipped_value_loss(values, old, returns, mask, cliprange_value=0.2, num_tokens=4)
    assert loss4.item() == pytest.approx(1.25 / 4)
    with pytest.raises(ValueError, match="cliprange_value must be"):
        clipped_value_loss(values, old, returns, mask, cliprange_value=0.0)


# -- per-token rewards ---------------------------------------------------------------------------
def _episode():
    """Tokens 0-2 prompt, turn 1 = (3, 6), user 6-7, turn 2 = (8, 11), token 11 closes the dialogue.
    Turn 1 issues a voucher (cost 1) with process reward 0.8; turn 2 ends the episode, reward 1."""
    return Episode(group=0, seed=0, token_ids=list(range(12)), logprobs=[0.0] * 12, prompt_length=3,
                   turn_spans=[(3, 6), (8, 11)], turn_costs=[1.0, 0.0], process_rewards=[0.8, None],
                   rewards=[0.0, 1.0])


def test_rewards_and_cost_land_on_the_last_token_of_their_turn():
    ep = _episode()
    r = token_rewards(ep, lam=0.5)
    expected = np.zeros(12)
    expected[5] = 0.8 - 0.5 * 1.0   # turn 1: w_p·p − λ·c on its last sampled token
    expected[10] = 1.0              # turn 2: the terminal outcome w_o·R
    assert r == pytest.approx(expected)
    assert token_rewards(ep, lam=0.5, use_cost=False)[5] == pytest.approx(0.8)
    assert token_rewards(ep, lam=0.5, w_p=0.0)[[5, 10]] == pytest.approx([-0.5, 1.0])
    assert token_rewards(ep, lam=0.5, w_o=2.0)[10] == pytest.approx(2.0)
    assert token_rewards(ep, lam=0.5, sum_norm=True)[[5, 10]] == pytest.approx([0.3 / 1.5, 1.0 / 1.5])
    with pytest.raises(ValueError, match="lam must be"):
        token_rewards(ep, lam=-1.0)
    ep.turn_spans[1] = (8, 8)
    with pytest.raises(ValueError, match="turn 1 has no sampled tokens"):
        token_rewards(ep, lam=0.5)


def test_ppo_advantages_gae_kl_penalty_and_whitening():
    """The episode above with V = 0.1 on every token, γ = 1, λ_GAE = 1 (so A_n = Σ_{m>=n} r_m − V_n)
    and a KL penalty 0.1·(log π_old − log π_ref) = 0.1·1.0 on each of the 6 agent tokens:
    rewards on agent tokens (3, 4, 5, 8, 9, 10) = (−0.1, −0.1, 0.3 − 0.1, −0.1, −0.1, 1 − 0.1),
    returns R_n = their suffix sums = (0.7, 0.8, 0.9, 0.7, 0.8, 0.9), A = R − 0.1."""
    cfg = CMPOConfig(estimator="ppo", gamma=1.0, gae_lambda=1.0, kl_coef=0.1, whiten_advantages=False)
    ppo = PPOAdvantages(cfg, accelerator=None)
    (row,) = ppo.rows([_episode()], lam=0.5)
    assert row["mask"].nonzero()[0].tolist() == [3, 4, 5, 8, 9, 10]
    row["old_values"] = np.full(12, 0.1)
    row["old_logprobs"] = np.where(row["mask"], -1.0, 0.0)
    row["ref_logprobs"] = np.where(row["mask"], -2.0, 0.0)
    metrics = ppo.advantages([row])
    agent = row["mask"]
    assert row["returns"][agent] == pytest.approx([0.7, 0.8, 0.9, 0.7, 0.8, 0.9])
    assert row["advantages"][agent] == pytest.approx([0.6, 0.7, 0.8, 0.6, 0.7, 0.8])
    assert not row["advantages"][~agent].any() and not row["returns"][~agent].any()
    assert metrics["rollout/value_mean"] == pytest.approx(0.1)
    assert metrics["rollout/return_mean"] == pytest.approx(0.8)
    # explained variance 1 − Var(R − V)/Var(R) = 0: a constant V explains nothing
    assert metrics["rollout/explained_variance"] == pytest.approx(0.0, abs=1e-9)

    cfg.whiten_advantages = True
    metrics = ppo.advantages([row])
    a = np.array([0.6, 0.7, 0.8, 0.6, 0.7, 0.8])
    assert row["advantages"][agent] == pytest.approx((a - 0.7) / a.std(), rel=1e-5)
    assert metrics["rollout/advantage_mean"] == pytest.approx(0.7)


def test_config_checks_the_ppo_settings():
    assert CMPOConfig(estimator="ppo", group_size=1).estimator_kwargs() == {}
    for bad, match in ((dict(gamma=1.5), "gamma must be in"), (dict(gae_lambda=-0.1), "gae_lambda must be in"),
                       (dict(cliprange_value=0.0), "cliprange_value must be > 0"),
                       (dict(vf_coef=-1.0), "vf_coef must be >= 0"),
                       (dict(value_head_learning_rate=0.0), "value_head_learning_rate must be > 0"),
                       (dict(cost_signal="session"), "cost_signal must be 'turn'")):
        with pytest.raises(ValueError, match=match):
            CMPOConfig(estimator="ppo", **bad)
    assert CMPOConfig(estimator="ppo", kl_coef=0.1).needs_reference
    assert not CMPOConfig(estimator="cmpo", kl_coef=0.1).needs_reference


# -- the value head ------------------------------------------------------------------------------
def _tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from cmpo.value import PolicyWithValueHead

    torch.manual_seed(0)
    return PolicyWithValueHead(AutoModelForCausalLM.from_pretrained(tiny_model_dir))


def test_value_head_one_forward_and_plain_model_folder(tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from cmpo.value import VALUE_HEAD_FILE, load_value_head

    model = _tiny(tiny_model_dir)
    torch.nn.init.normal_(model.v_head.summary.weight)
    ids = torch.randint(0, 100, (2, 9))
    cols = torch.tensor([2, 5, 7])
    out = model(input_ids=ids, logits_to_keep=cols, return_value=True)
    plain = model.policy(input_ids=ids, logits_to_keep=cols)
    hidden = model.policy.model(input_ids=ids).last_hidden_state
    assert torch.allclose(out.logits, plain.logits)
    assert out.value.shape == (2, 3)
    assert torch.allclose(out.value, model.v_head(hidden[:, cols]), atol=1e-6)
    # without return_value it is the policy's forward (the rollout engine uses it as a plain model)
    assert torch.equal(model(input_ids=ids).logits, model.policy(input_ids=ids).logits)
    assert model.config is model.policy.config and model.generate.__self__ is model.policy

    model.save_pretrained(tmp_path / "final")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "final")
    assert torch.allclose(reloaded(input_ids=ids).logits, model.policy(input_ids=ids).logits, atol=1e-6)
    assert (tmp_path / "final" / VALUE_HEAD_FILE).is_file()
    head = load_value_head(tmp_path / "final", hidden_size=model.config.hidden_size)
    assert torch.equal(head.summary.weight, model.v_head.summary.weight)


def test_value_head_learns_on_a_fixed_batch(tiny_model_dir):
    """Eight AdamW steps on one batch (the policy's learning rate 0): the value loss falls at every
    step, from 0.5·mean(R²) (the head starts at V = 0) to under a quarter of it."""
    from cmpo.ppo import param_groups

    model = _tiny(tiny_model_dir)
    optimizer = torch.optim.AdamW(param_groups(model, value_head_lr=3e-3), lr=0.0)
    ids = torch.randint(0, 100, (2, 10))
    mask = torch.zeros(2, 10, dtype=torch.bool)
    mask[:, 4:8] = True
    cols = torch.arange(1, 10)
    returns = torch.tensor([[0.0, 0.0, 0.0, 0.4, 0.6, 0.8, 1.0, 0.0, 0.0],
                            [0.0, 0.0, 0.0, 0.3, 0.5, 0.7, 0.9, 0.0, 0.0]])
    losses = []
    for _ in range(8):
        value = model(input_ids=ids, logits_to_keep=cols - 1, return_value=True).value
        loss, _ = clipped_value_loss(value, value.detach(), returns, mask[:, cols], cliprange_value=10.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(0.5 * np.mean(np.array([0.4, 0.6, 0.8, 1.0, 0.3, 0.5, 0.7, 0.9]) ** 2))
    assert losses[-1] < 0.25 * losses[0], losses
    assert all(b < a for a, b in itertools.pairwise(losses)), losses


# -- the trainer through the CLI -------------------------------------------------------------------
def _cli(model_dir, out, *extra):
    cmd = [sys.executable, "-m", "cmpo.train", "--config", str(ROOT / "examples" / "cmpo_tiny_cpu.yaml"),
           "--estimator", "ppo", "--output_dir", str(out), "--model_name_or_path", model_dir,
           "--build_tiny_model", "false",
           "--env_kwargs", '{"split": "train", "process_judge": "rule", "max_turns": 2}',
           "--group_size", "1", "--groups_per_step", "2", "--max_new_tokens", "16", "--micro_batch_size", "1",
           "--num_mini_batches", "2", "--lr_scheduler_type", "constant", "--warmup_ratio", "0",
           "--value_head_learning_rate", "0.01", "--beta", "0", "--save_steps", "1", "--report_to", "none",
           "--plot", "false", "--disable_tqdm", "true", *extra]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_ppo_through_the_cli_saves_the_value_head_and_resumes_exactly(tmp_path, tiny_model_dir):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    straight = _cli(tiny_model_dir, tmp_path / "straight", "--max_steps", "2")
    assert [r["step"] for r in straight] == [1, 2]
    for r in straight:
        assert all(math.isfinite(r[k]) for k in ("loss/value_loss", "loss/value_clip_fraction",
                                                 "loss/policy_loss", "rollout/value_mean"))
        assert r["loss/value_loss"] > 0
    assert straight[0]["rollout/value_mean"] == 0.0  # the head starts from zeros ...
    assert straight[1]["rollout/value_mean"] != 0.0  # ... and moved in step 1's two updates

    final = tmp_path / "straight" / "final"
    head = load_file(final / "value_head.safetensors")
    ckpt = load_file(tmp_path / "straight" / "checkpoint-2" / "model.safetensors")
    assert torch.equal(head["summary.weight"], ckpt["v_head.summary.weight"]) and head["summary.weight"].any()
    policy = AutoModelForCausalLM.from_pretrained(final)  # a plain model folder, no value-head keys
    assert not any(k.startswith(("v_head", "policy.")) for k in load_file(final / "model.safetensors"))
    assert torch.equal(policy.model.norm.weight, ckpt["policy.model.norm.weight"])

    # 1 step, then --resume to 2: the same run as 2 straight steps (value head and optimiser restored)
    resumed = tmp_path / "resumed"
    _cli(tiny_model_dir, resumed, "--max_steps", "1")
    records = _cli(tiny_model_dir, resumed, "--max_steps", "2", "--resume", "true")
    assert [r["step"] for r in records] == [1, 2]
    for key in ("loss/loss", "loss/value_loss", "loss/policy_loss", "loss/entropy", "loss/grad_norm",
                "rollout/value_mean", "rollout/return_mean", "rollout/outcome", "rollout/generated_tokens",
                "cost/lambda"):
        assert records[1][key] == pytest.approx(straight[1][key], rel=1e-6, abs=1e-7), key
    head_b = load_file(resumed / "final" / "value_head.safetensors")
    assert torch.allclose(head_b["summary.weight"], head["summary.weight"], atol=1e-7)
