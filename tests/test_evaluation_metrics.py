"""Evaluation metrics, results store, redaction and report on handmade results files."""

from __future__ import annotations

import json
import math

import pytest

from interactcs_gym.core.metrics import GENERIC_METRICS, Metric, MetricFamily, mean_std_over_seeds
from interactcs_gym.evaluation.metrics import family_spec_for_env, resolve_family
from interactcs_gym.fds.metrics import FDS_METRICS
from interactcs_gym.evaluation.plots import pareto_front, pareto_plot
from interactcs_gym.evaluation.redact import REDACTED, Scrubber, redact_kwargs
from interactcs_gym.evaluation.report import load_runs, markdown_report
from interactcs_gym.evaluation.runner import EvalConfig, episode_seeds
from interactcs_gym.evaluation.store import ResultsFileError, ResultsStore, read_results


def episode(u, s, *, sat=None, finished=True, voucher=False, status="ok", quality=None,
            config_hash="h1", agent="sop", env_id="FDS-Hard-v0", family="fds"):
    return {"record": "episode", "config_hash": config_hash, "env_id": env_id, "agent": agent,
            "metric_family": family, "user_index": u, "seed_index": s, "seed": 1000 * s + u,
            "status": status, "turns": 3, "return": 0.0 if sat is None else (sat - 1) / 4,
            "cost_total": 1.0 if voucher else 0.0,
            "error": None if status == "ok" else {"type": "ValueError", "message": "boom"},
            "final_info": {"satisfaction": None if status != "ok" else sat,
                           "finished_ok": finished, "voucher_issued": voucher},
            "per_turn": [{"format_ok": True, "costs": {"voucher": 1.0} if voucher else {}}],
            "quality": quality}


def q(comm, logic, heuristic=True):
    return {"judge": "h", "heuristic": heuristic, "comm_total": comm, "logic_total": logic}


def handmade_records():
    """3 users x 2 seeds of FDS-Hard-v0 (see the hand computation in the tests)."""
    return [
        {"record": "run", "config_hash": "h1", "users": 3, "seeds": 2,
         "config": {"env_id": "FDS-Hard-v0", "agent": "sop"}, "metric_family": "fds"},
        episode(0, 0, sat=4, voucher=True, quality=q(20, 10)),
        episode(1, 0, sat=2, quality=q(24, 8)),
        episode(2, 0, status="agent_error"),
        episode(3, 0, status="env_error"),              # not scored, counted
        episode(0, 1, status="agent_error"),            # superseded by the retry below
        episode(0, 1, sat=5, voucher=True, quality=q(26, 12)),
        episode(1, 1, sat=3, finished=False, voucher=True),
        episode(2, 1, sat=3),
    ]


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def test_mean_std_over_seeds_is_the_std_of_per_seed_means():
    # seed 0: users 1, 2, 3 -> 2; seed 1: users 4, 4 -> 4 (None left out); mean 3, pop. std 1
    agg = mean_std_over_seeds([(0, 1), (0, 2), (0, 3), (1, 4), (1, 4), (1, None)])
    assert (agg.mean, agg.std, agg.n, agg.seeds) == (3.0, 1.0, 5, 2)
    assert mean_std_over_seeds([(0, None)]).mean is None
    assert mean_std_over_seeds([(0, 2.5)]).std == 0.0
    # reduce="sum" (totals such as matched gold actions): seed 0 sums to 6, seed 1 to 8 -> 7 +- 1
    agg = mean_std_over_seeds([(0, 1), (0, 2), (0, 3), (1, 4), (1, 4)], reduce="sum")
    assert (agg.mean, agg.std) == (7.0, 1.0)
    with pytest.raises(ValueError, match="reduce"):
        Metric("x", "X", reduce="max")


def test_fds_table1_metrics_by_hand(tmp_path):
    path = tmp_path / "sop-hard.jsonl"
    write_jsonl(path, handmade_records())
    [run] = load_runs([path])
    m = run.metrics
    # Sat: seed 0 (4 + 2 + 1[agent error]) / 3 = 7/3, seed 1 (5 + 3 + 3) / 3 = 11/3
    assert m["sat"].mean == pytest.approx(3.0) and m["sat"].std == pytest.approx(2 / 3)
    # FR: seed 0 (1, 1, 0[agent error]) = 2/3; seed 1 (1, 0[finished_ok False], 1) = 2/3
    assert m["fr"].mean == pytest.approx(2 / 3) and m["fr"].std == pytest.approx(0.0)
    # V-Rate: seed 0 1/3, seed 1 2/3 -> 0.5 +- 1/6
    assert m["v_rate"].mean == pytest.approx(0.5) and m["v_rate"].std == pytest.approx(1 / 6)
    # Comm: seed 0 (20 + 24) / 2 = 22, seed 1 26 -> 24 +- 2; Logic: 9 and 12 -> 10.5 +- 1.5
    assert (m["comm"].mean, m["comm"].std) == pytest.approx((24.0, 2.0))
    assert (m["logic"].mean, m["logic"].std) == pytest.approx((10.5, 1.5))
    assert run.episodes == 7 and run.counts["env_error"] == 1 and run.counts["agent_error"] == 1
    assert run.planned == (3, 2) and run.heuristic

    table = markdown_report([run])
    row = next(line for line in table.splitlines() if line.startswith("| sop-hard"))
    assert "3.00 ± 0.67" in row and "66.7 ± 0.0" in row and "50.0 ± 16.7" in row
    assert "24.00 ± 2.00 (heuristic)" in row and "10.50 ± 1.50 (heuristic)" in row
    assert "1 agent, 1 env" in row and "4 × 2" in row and "incomplete" not in row
    assert "(heuristic): scored by an offline heuristic judge" in table


def test_comm_and_logic_are_na_without_a_judge(tmp_path):
    records = [r if r["record"] == "run" else {**r, "quality": None} for r in handmade_records()]
    write_jsonl(tmp_path / "r.jsonl", records)
    [run] = load_runs([tmp_path / "r.jsonl"])
    row = next(line for line in markdown_report([run]).splitlines() if line.startswith("| r "))
    cells = [c.strip() for c in row.strip("|").split("|")]
    header = ["Run", "Env", "Agent", "Users × Seeds"] + [m.label for m in FDS_METRICS.metrics]
    assert cells[header.index("Comm")] == "n/a" and cells[header.index("Logic")] == "n/a"
    assert "no dialogue-quality judge" in markdown_report([run])


def test_report_groups_runs_by_config_hash_and_family_and_plots(tmp_path):
    a = tmp_path / "a.jsonl"
    write_jsonl(a, handmade_records() + [
        episode(0, 0, sat=2, config_hash="h2", agent="never-voucher"),
        episode(1, 0, sat=1, config_hash="h2", agent="never-voucher")])
    b = tmp_path / "b.jsonl"
    write_jsonl(b, [episode(0, 0, sat=3, env_id="Other-v0", family="generic")])
    runs = load_runs([a, b])
    assert [r.name for r in runs] == ["a#h1", "a#h2", "b"]
    assert [r.family.name for r in runs] == ["fds", "fds", "generic"]
    text = markdown_report(runs)
    assert text.count("| Run |") == 2 and "## Generic dialogue env" in text
    png = pareto_plot(runs, tmp_path / "plots" / "pareto.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(KeyError, match="no metric 'nope'"):
        pareto_plot(runs, tmp_path / "x.png", x="nope")


def test_pareto_front():
    # (cost, utility): b dominates a; c is cheaper; d is dominated by b
    pts = [(0.5, 2.0), (0.4, 3.0), (0.1, 2.5), (0.6, 2.9)]
    assert pareto_front(pts) == [2, 1]


def test_truncated_last_line_is_reported_and_middle_corruption_is_an_error(tmp_path):
    path = tmp_path / "r.jsonl"
    good = [json.dumps(episode(u, 0, sat=3)) for u in range(2)]
    path.write_text(good[0] + "\n" + good[1][:40], encoding="utf-8")
    res = read_results(path)
    assert len(res.episodes()) == 1 and res.truncated_tail == (len(good[0]) + 1, good[1][:40].encode())

    path.write_text(good[0] + "\n" + good[1], encoding="utf-8")  # complete, only the newline missing
    res = read_results(path)
    assert len(res.episodes()) == 2 and res.missing_final_newline and res.truncated_tail is None

    path.write_text(good[0][:30] + "\n" + good[1] + "\n", encoding="utf-8")
    with pytest.raises(ResultsFileError, match="line 1 is not a valid record"):
        read_results(path)


def test_store_repairs_a_cut_short_line_keeping_its_bytes(tmp_path):
    path = tmp_path / "r.jsonl"
    line = json.dumps(episode(0, 0, sat=3))
    path.write_text(line + "\n" + line[:25], encoding="utf-8")
    with ResultsStore(path) as store:
        [repair] = store.repairs
        assert repair["dropped_text"] == line[:25] and repair["line"] == 2
        store.append({"record": "episode", "user_index": 1})
    res = read_results(path)
    assert [r["record"] for r in res.records] == ["episode", "repair", "episode"]
    assert res.truncated_tail is None


def test_store_lock_refuses_a_second_writer(tmp_path):
    with ResultsStore(tmp_path / "r.jsonl"):
        with pytest.raises(ResultsFileError, match="another evaluation"):
            ResultsStore(tmp_path / "r.jsonl").open()
    ResultsStore(tmp_path / "r.jsonl").open().close()  # released


def test_redaction_of_kwargs_and_scrubbing_of_records(monkeypatch):
    found = []
    kw = {"api_key": "abc123secret", "max_tokens": 64, "tokenizer": "x",
          "backend": {"hf_token": "hf_zzzzzzzzzzzzzzzz", "base_url": "https://me:pw@host/v1"}}
    red = redact_kwargs(kw, found=found)
    assert red == {"api_key": REDACTED, "max_tokens": 64, "tokenizer": "x",
                   "backend": {"hf_token": REDACTED, "base_url": "https://host/v1"}}
    monkeypatch.setenv("MY_SERVICE_API_KEY", "envsecret-999")
    scrub = Scrubber(found)
    rec = scrub({"m": ["key abc123secret and envsecret-999", "Bearer tok_ABCDEFGHIJKLMNOP"],
                 "x": "sk-proj-ABCDEFGHIJKLMNOPQRST", "n": 3})
    assert json.dumps(rec).count(REDACTED) == 4 and "secret" not in json.dumps(rec)
    # the config hash ignores the secret's value
    a = EvalConfig("E", "sop", agent_kwargs={"api_key": "one-key-123"}).config_hash()
    b = EvalConfig("E", "sop", agent_kwargs={"api_key": "two-key-456"}).config_hash()
    c = EvalConfig("E", "sop", agent_kwargs={"temperature": 0.5}).config_hash()
    assert a == b != c


def test_episode_seeds_are_reproducible_and_distinct():
    # the env picks user u: env seed base + s, agent seed (base + s) * 100003 + u
    assert episode_seeds(0, 7, 2) == (2, 2 * 100_003 + 7)
    assert episode_seeds(10, 0, 1) == (11, 11 * 100_003)
    agent_seeds = {episode_seeds(0, u, s)[1] for u in range(80) for s in range(3)}
    assert len(agent_seeds) == 240
    # the seed picks the user: one SeedSequence word, distinct per (u, s), used for both
    seeds = {(u, s): episode_seeds(0, u, s, by_user_index=False) for u in range(80) for s in range(3)}
    assert len({env for env, _ in seeds.values()}) == 240
    assert all(env == agent and 0 <= env < 2**32 for env, agent in seeds.values())
    assert episode_seeds(0, 5, 2, by_user_index=False) == seeds[(5, 2)]
    assert episode_seeds(1, 5, 2, by_user_index=False) != seeds[(5, 2)]


class _Env:
    def __init__(self, family=None):
        if family is not None:
            self.metric_family = family
        self.unwrapped = self


CUSTOM = MetricFamily(name="tau2-like", title="τ²-like", utility="pass", cost="cost",
                      metrics=(Metric("pass", "Pass@1 (%)", percent=True, digits=1),
                               Metric("cost", "Cost")),
                      episode_values=lambda r: {"pass": float(r["final_info"].get("reward", 0) >= 1),
                                                "cost": r.get("cost_total")})


def test_metric_family_resolution_hook(tmp_path):
    assert family_spec_for_env("FDS-Hard-v0") == "fds"
    assert family_spec_for_env("interactcs_gym:FDS-Easy-v0") == "fds"
    # an id without an env: the family its registered class declares (no id-prefix table)
    assert family_spec_for_env("Tau2-Retail-v0") == "interactcs_gym.tau2.metrics:TAU2_METRICS"
    assert family_spec_for_env("Unregistered-v0") == "generic"
    assert family_spec_for_env("X-v0", _Env("fds")) == "fds"
    spec = "test_evaluation_metrics:CUSTOM"
    assert family_spec_for_env("Tau2-Retail-v0", _Env(spec)) == spec
    assert resolve_family(spec) is CUSTOM
    assert family_spec_for_env("Tau2-Retail-v0", _Env(CUSTOM)) == "tau2-like"
    with pytest.raises(ValueError, match="unknown metric family"):
        resolve_family("nope")
    # A results file recorded with the module:attr family reports its columns.
    rec = [{**episode(0, s, sat=None, family=spec, env_id="Tau2-Retail-v0"),
            "final_info": {"reward": float(s == 0)}} for s in range(2)]
    write_jsonl(tmp_path / "t.jsonl", rec)
    [run] = load_runs([tmp_path / "t.jsonl"])
    assert run.family is CUSTOM and run.metrics["pass"].mean == 0.5
    assert "Pass@1 (%)" in markdown_report([run]) and "50.0 ± 50.0" in markdown_report([run])


def test_generic_family_values():
    rec = episode(0, 0, sat=5)
    rec["per_turn"] = [{"format_ok": True}, {"format_ok": False}]
    values = GENERIC_METRICS.episode_values(rec)
    assert values["fr"] == 0.0 and values["return"] == 1.0 and math.isclose(values["turns"], 3)
