"""The CMPO trainer on a tiny local model: a third-party env registered by the test, the loss mask,
gradient-accumulation invariance, KL to a reference (full model and LoRA)."""

from __future__ import annotations

import json
import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

from cmpo.config import CMPOConfig  # noqa: E402
from tests.toy_text_env import register_toy_env  # noqa: E402


pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


def _config(tmp_path, tiny_model_dir, **overrides):
    base = dict(output_dir=str(tmp_path / "run"), model_name_or_path=tiny_model_dir, env_id=register_toy_env(),
                env_kwargs={"max_turns": 2, "long_turn_chars": 0}, group_size=2, groups_per_step=2,
                max_new_tokens=6, max_steps=2, learning_rate=1e-3, cost_limit=0.5, micro_batch_size=2,
                report_to=["tensorboard"], disable_tqdm=True, save_steps=1)
    base.update(overrides)
    return CMPOConfig(**base)


def _params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_a_third_party_env_registered_by_the_test_can_be_trained_on(tmp_path, tiny_model_dir):
    from cmpo.trainer import CMPOTrainer

    trainer = CMPOTrainer(_config(tmp_path, tiny_model_dir))
    before = _params(trainer.model)
    records = trainer.train()
    assert [r["step"] for r in records] == [1, 2]
    # every turn costs 1.0 here (long_turn_chars=0), so J_C = 2 > d = 0.5 and the PID λ rises:
    # λ_k = kp·e_k + I_k with e = 1.5, I_k = 0.1·1.5·k  ->  1.65, 1.80
    assert [r["rollout/session_cost"] for r in records] == [2.0, 2.0]
    assert [r["cost/lambda"] for r in records] == pytest.approx([1.65, 1.80])
    for r in records:
        assert all(math.isfinite(r[k]) for k in ("loss/loss", "loss/entropy", "loss/grad_norm",
                                                 "loss/approx_kl", "loss/clip_fraction", "perf/tokens_per_s"))
        assert r["rollout/satisfaction"] is None  # the toy env reports none
        assert 0.0 <= r["rollout/process_reward"] <= 1.0
    assert any(not torch.equal(before[k], v) for k, v in _params(trainer.model).items())
    run = tmp_path / "run"
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    state = json.loads((run / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["step"] == 2 and state["controller"]["state"]["lam"] == pytest.approx(1.80)
    assert (run / "final" / "config.json").exists() and (run / "training.png").stat().st_size > 0
    assert list(run.glob("cmpo/**/events.out.tfevents.*"))  # tensorboard through accelerate
    dialogue = json.loads((run / "dialogues.jsonl").read_text().splitlines()[0])
    assert dialogue["messages"][0]["role"] == "system" and dialogue["turn_costs"] == [1.0, 1.0]


def test_loss_mask_and_token_advantages_cover_exactly_the_agent_tokens(tiny_model_dir):
    import numpy as np
    from transformers import AutoTokenizer

    from cmpo.engines import Generation, GenerationEngine, SamplingParams, stop_token_ids_for
    from cmpo.rollout import RolloutCollector
    from cmpo.trainer import collate, token_rows

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)

    class Scripted(GenerationEngine):
        sampling = SamplingParams(max_new_tokens=32, stop_token_ids=stop_token_ids_for(tok))

        def generate(self, prompts):
            ids = tok.encode("agent words", add_special_tokens=False) + [2]
            return [Generation(ids, [-1.0] * len(ids), "stop") for _ in prompts]

    episodes = RolloutCollector(register_toy_env(), Scripted(), tok, group_size=2,
                                env_kwargs={"max_turns": 3}).collect([0])
    turn_adv = [np.array([0.5, -1.0, 2.0]), np.array([1.0, 0.0, -0.5])]
    rows = token_rows(episodes, turn_adv)
    for ep, row, adv in zip(episodes, rows, turn_adv):
        assert row["mask"].astype(int).tolist() == ep.agent_mask()
        for (start, end), a in zip(ep.turn_spans, adv):
            assert (row["advantages"][start:end] == a).all()
        assert (row["advantages"][~row["mask"]] == 0).all()
    batch = collate(rows, tok.pad_token_id, "cpu")
    assert batch["mask"].sum().item() == sum(sum(ep.agent_mask()) for ep in episodes)


@pytest.mark.slow
def test_gradient_accumulation_equals_one_big_batch(tmp_path, tiny_model_dir):
    """TRL-style invariance: 4 micro-batches of 1 give the update of 1 micro-batch of 4."""
    from cmpo.trainer import CMPOTrainer

    results = []
    for micro in (1, 4):
        cfg = _config(tmp_path / f"m{micro}", tiny_model_dir, micro_batch_size=micro, max_steps=1,
                      report_to=["none"], plot=False, env_kwargs={"max_turns": 2, "long_turn_chars": 30})
        trainer = CMPOTrainer(cfg)
        records = trainer.train()
        results.append((records[0], _params(trainer.model)))
    (r1, p1), (r4, p4) = results
    assert r1["loss/loss"] == pytest.approx(r4["loss/loss"], abs=1e-6)
    assert r1["loss/entropy"] == pytest.approx(r4["loss/entropy"], abs=1e-4)
    for k in p1:
        assert torch.allclose(p1[k], p4[k], atol=1e-6), k


@pytest.mark.slow
@pytest.mark.parametrize("use_peft", [False, True])
def test_kl_to_reference_model(tmp_path, tiny_model_dir, use_peft):
    from cmpo.trainer import CMPOTrainer

    cfg = _config(tmp_path, tiny_model_dir, beta=0.1, use_peft=use_peft, lora_r=4, lora_alpha=8,
                  learning_rate=1e-2, warmup_ratio=0.0, recompute_old_logprobs=True, report_to=["none"], plot=False,
                  save_steps=2)
    records = CMPOTrainer(cfg).train()
    # the frozen reference is no part of a checkpoint: the policy alone is model.safetensors
    saved = sorted(p.name for p in (tmp_path / "run" / "checkpoint-2").glob("model*.safetensors"))
    assert saved == ["model.safetensors"]
    # step 1: the policy is the reference; step 2: it has moved away from it
    assert records[0]["loss/kl_ref"] == pytest.approx(0.0, abs=1e-6)
    assert records[1]["loss/kl_ref"] > 1e-6
    assert records[0]["loss/mean_ratio"] == pytest.approx(1.0, abs=1e-5)  # recomputed old log-probs
    if use_peft:
        assert (tmp_path / "run" / "final" / "adapter_config.json").exists()


def test_family_metrics_use_the_env_family_definitions():
    """The trainer logs the env's metric family (metrics/*) with the evaluation's definitions."""
    from cmpo.metrics import family_metrics
    from interactcs_gym.evaluation.metrics import family_for_env

    def summary(sat, finished, voucher, cost):
        return {"record": {"status": "ok", "seed_index": 0, "cost_total": cost, "turns": 3, "quality": None,
                           "final_info": {"satisfaction": sat, "finished_ok": finished,
                                          "voucher_issued": voucher}, "per_turn": []}}

    family = family_for_env("FDS-Hard-v0")
    assert family.name == "fds"
    got = family_metrics(family, [summary(5, True, True, 1.0), summary(2, False, False, 0.0)])
    assert got == {"metrics/sat": 3.5, "metrics/fr": 0.5, "metrics/v_rate": 0.5, "metrics/cost": 0.5,
                   "metrics/turns": 3.0}  # Comm/Logic need a quality judge: not logged
