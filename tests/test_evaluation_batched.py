"""Batched evaluation: agents with ``act_batch`` play ``--batch-size`` episodes in lockstep
(issue 12, point 2), with the records, seeds and resume behaviour of the one-at-a-time path."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("interactcs_gym.fds.sop_agent")

from test_evaluation_cli import episodes, run_cli  # noqa: E402

from interactcs_gym.evaluation import evaluate  # noqa: E402
from interactcs_gym.fds.sop_agent import SOPAgent  # noqa: E402

ENV = "FDS-Hard-v0"


class BatchedSOP:
    """The SOP agent, batched: one SOP agent per episode, keyed by the episode's agent seed and
    reset with it on first sight (so each row gets exactly what the one-at-a-time path gives it)."""

    name = "batched-sop"

    def __init__(self, fail_on_call: int | None = None, interrupt_on_call: int | None = None):
        self.single = SOPAgent()
        self.rows: dict[int, SOPAgent] = {}
        self.calls, self.batch_sizes = 0, []
        self.fail_on_call, self.interrupt_on_call = fail_on_call, interrupt_on_call

    def reset(self, *, seed=None):
        self.single.reset(seed=seed)

    def act(self, observation, info):
        return self.single.act(observation, info)

    def act_batch(self, observations, infos, *, seeds):
        self.calls += 1
        self.batch_sizes.append(len(observations))
        if self.calls == self.fail_on_call:
            raise RuntimeError("the batch failed")
        if self.calls == self.interrupt_on_call:
            raise KeyboardInterrupt
        actions = []
        for obs, info, seed in zip(observations, infos, seeds):
            if seed not in self.rows:
                self.rows[seed] = SOPAgent()
                self.rows[seed].reset(seed=seed)
            actions.append(self.rows[seed].act(obs, info))
        return actions


def comparable(record):
    return {k: v for k, v in record.items() if k != "timing"}


def by_key(path):
    return {(r["user_index"], r["seed_index"]): comparable(r) for r in episodes(path)}


def test_batched_records_equal_the_one_at_a_time_records(tmp_path):
    one = evaluate(ENV, BatchedSOP(), users=5, seeds=2, out=tmp_path / "one.jsonl", batch_size=1,
                   progress=False)
    agent = BatchedSOP()
    many = evaluate(ENV, agent, users=5, seeds=2, out=tmp_path / "many.jsonl", batch_size=4,
                    progress=False)
    assert agent.calls > 0 and max(agent.batch_sizes) == 4  # it did play in lockstep
    assert one.counts["ok"] == many.counts["ok"] == 10
    assert by_key(tmp_path / "one.jsonl") == by_key(tmp_path / "many.jsonl")
    # the plain SOP agent (no act_batch) gives the same episodes: same seeds, same records
    sop = evaluate(ENV, "sop", users=5, seeds=2, out=tmp_path / "sop.jsonl", batch_size=4,
                   progress=False)
    strip = lambda r: {k: v for k, v in r.items() if k not in ("agent", "config_hash")}  # noqa: E731
    assert ({k: strip(v) for k, v in by_key(tmp_path / "sop.jsonl").items()}
            == {k: strip(v) for k, v in by_key(tmp_path / "many.jsonl").items()})
    assert sop.report_markdown.splitlines()[2:] and "| Sat |" in sop.report_markdown


def test_an_interrupted_batched_run_resumes_without_repeating_or_losing_episodes(tmp_path):
    out = tmp_path / "run.jsonl"
    first = evaluate(ENV, BatchedSOP(interrupt_on_call=8), users=6, seeds=2, out=out, batch_size=4,
                     progress=False)
    assert first.interrupted and 0 < first.ran < 12
    kept = by_key(out)
    assert len(episodes(out)) == len(kept) == first.ran  # appended as each episode finished
    second = evaluate(ENV, BatchedSOP(), users=6, seeds=2, out=out, batch_size=4, progress=False)
    assert second.skipped == first.ran and second.ran == 12 - first.ran
    keys = [(r["user_index"], r["seed_index"]) for r in episodes(out)]
    assert len(keys) == len(set(keys)) == 12
    whole = tmp_path / "whole.jsonl"
    evaluate(ENV, BatchedSOP(), users=6, seeds=2, out=whole, batch_size=4, progress=False)
    assert by_key(out) == by_key(whole)


def test_act_batch_raising_records_an_agent_error_for_every_episode_of_the_call(tmp_path):
    out = tmp_path / "run.jsonl"
    result = evaluate(ENV, BatchedSOP(fail_on_call=1), users=3, seeds=1, out=out, batch_size=3,
                      progress=False)
    records = episodes(out)
    assert result.counts["agent_error"] == 3 and len(records) == 3
    for r in records:
        assert r["status"] == "agent_error" and r["turns"] == 0
        assert r["error"]["phase"] == "agent.act_batch" and r["error"]["type"] == "RuntimeError"
        assert r["error"]["message"] == "the batch failed" and r["error"]["turn"] == 1
        assert r["messages"][0]["role"] == "system"  # the dialogue so far is kept


def test_act_batch_returning_the_wrong_number_of_turns_is_an_agent_error(tmp_path):
    class Short(BatchedSOP):
        def act_batch(self, observations, infos, *, seeds):
            return super().act_batch(observations, infos, seeds=seeds)[:-1]

    result = evaluate(ENV, Short(), users=2, seeds=1, out=tmp_path / "x.jsonl", batch_size=2,
                      progress=False)
    assert result.counts["agent_error"] == 2
    assert all("expected a list of 2 str" in r["error"]["message"] for r in result.records)


def test_policy_agent_batched_through_the_cli(tmp_path, tiny_model_dir):
    out = tmp_path / "policy.jsonl"
    kwargs = json.dumps({"model": tiny_model_dir, "greedy": True, "max_new_tokens": 8})
    proc = run_cli("--env", ENV, "--agent", "policy", "--agent-kwargs", kwargs, "--users", 3,
                   "--seeds", 2, "--batch-size", 4, "--max-steps", 4, "--out", out, "--no-progress",
                   timeout=600)
    assert proc.returncode == 0, proc.stderr
    records = episodes(out)
    assert sorted((r["user_index"], r["seed_index"]) for r in records) == [
        (u, s) for u in range(3) for s in range(2)]
    assert all(r["agent"] == "policy" and r["turns"] >= 1 for r in records)
    assert "| Sat |" in proc.stdout and out.with_suffix(".md").exists()


def test_policy_agent_greedy_batch_turns_equal_its_single_turns(tiny_model_dir):
    from interactcs_gym.agents.policy import PolicyAgent

    agent = PolicyAgent(tiny_model_dir, greedy=True, max_new_tokens=6)
    infos = [{"messages": [{"role": "system", "content": "You are a support agent."},
                           {"role": "user", "content": text}]}
             for text in ("hi", "my order is late and I want a refund now")]
    singles = [agent.act("", info) for info in infos]
    assert agent.act_batch(["", ""], infos, seeds=[1, 2]) == singles
    assert agent.act_batch([], [], seeds=[]) == []
