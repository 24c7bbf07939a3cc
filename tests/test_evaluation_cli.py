"""The evaluation CLI end to end: real subprocesses, kill-and-resume, bad inputs, report command.

The toy env of ``eval_toy_env`` (tests/) stands in for an FDS env here; ``test_evaluation_fds.py``
runs the same checks on FDS-Hard-v0 with the scripted SOP agent.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from interactcs_gym.evaluation.cli import main
from interactcs_gym.evaluation.report import load_runs
from interactcs_gym.evaluation.store import read_results

REPO = Path(__file__).resolve().parents[1]
TOY = "eval_toy_env:EvalToy-v0"
AGENT = "eval_toy_env:ToyAgent"


def cli_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "tests"), env.get("PYTHONPATH", "")])
    return env


def run_cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "interactcs_gym.evaluate", *map(str, args)],
                          cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=timeout)


def episodes(path):
    return read_results(path).episodes()


def comparable(record):
    """What must be identical between an interrupted-and-resumed run and an uninterrupted one."""
    return {k: record[k] for k in ("user_index", "seed_index", "seed", "status", "messages",
                                   "final_info", "per_turn", "return", "cost_total", "turns")}


def by_key(path):
    return {(r["user_index"], r["seed_index"]): comparable(r) for r in episodes(path)}


def metrics(path):
    [run] = load_runs([path])
    return {k: (a.mean, a.std, a.n) for k, a in run.metrics.items()}


def test_cli_runs_writes_results_and_report_and_resumes_without_repeating(tmp_path):
    out = tmp_path / "toy.jsonl"
    proc = run_cli("--env", TOY, "--agent", AGENT, "--users", 3, "--seeds", 2, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "| Run | Env | Agent | Users × Seeds | Sat | FR (%) | Comm | Logic | V-Rate (%)" in proc.stdout
    assert "6/6 [" in proc.stderr and "episode/s]" in proc.stderr  # the tqdm progress bar
    eps = episodes(out)
    assert len(eps) == 6 and len({(e["user_index"], e["seed_index"]) for e in eps}) == 6
    first = eps[0]
    assert first["env_id"] == TOY and first["agent"] == AGENT and first["status"] == "ok"
    assert first["messages"][0]["role"] == "system" and first["final_info"]["satisfaction"] in range(1, 6)
    assert first["per_turn"][0]["process_reward"] == 0.5 and "cost" in first["per_turn"][0]
    assert first["user_selection"] == "options" and first["timing"]["wall_s"] >= 0
    report = out.with_suffix(".md")
    assert report.exists() and "| toy |" in report.read_text()

    again = run_cli("--env", TOY, "--agent", AGENT, "--users", 3, "--seeds", 2, "--out", out)
    assert again.returncode == 0 and "ran 0, already recorded 6" in again.stderr
    assert len(episodes(out)) == 6
    assert [r["record"] for r in read_results(out).records].count("run") == 2

    # More users extend the same run: only the new keys are played.
    more = run_cli("--env", TOY, "--agent", AGENT, "--users", 4, "--seeds", 2, "--out", out)
    assert "ran 2, already recorded 6" in more.stderr and len(episodes(out)) == 8


@pytest.mark.slow
def test_kill_and_resume_gives_the_uninterrupted_results(tmp_path):
    args = ["--env", TOY, "--env-kwargs", '{"delay": 0.05}', "--agent", AGENT,
            "--agent-kwargs", '{"p_voucher": 0.5}', "--users", 5, "--seeds", 2, "--no-progress"]
    killed = tmp_path / "killed.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "interactcs_gym.evaluate", *map(str, args),
                             "--out", str(killed)], cwd=REPO, env=cli_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if killed.exists() and killed.read_text().count('"record": "episode"') >= 3:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    written = len(episodes(killed))
    assert 3 <= written < 10, "the run should have been killed half-way"

    resumed = run_cli(*args, "--out", killed)
    assert resumed.returncode == 0, resumed.stderr
    assert f"ran {10 - written}, already recorded {written}" in resumed.stderr
    eps = episodes(killed)
    assert len(eps) == 10 and len({(e["user_index"], e["seed_index"]) for e in eps}) == 10

    clean = tmp_path / "clean.jsonl"
    assert run_cli(*args, "--out", clean).returncode == 0
    assert by_key(killed) == by_key(clean)
    assert metrics(killed) == metrics(clean)


def test_truncated_last_line_is_repaired_recorded_and_rerun(tmp_path):
    out = tmp_path / "r.jsonl"
    base = ["--env", TOY, "--agent", AGENT, "--users", 3, "--seeds", 2, "--no-progress", "--quiet"]
    assert main([*base, "--out", str(out)]) == 0
    reference = by_key(out)
    lines = out.read_text(encoding="utf-8").splitlines(keepends=True)
    cut = lines[-1][: len(lines[-1]) // 2]
    out.write_text("".join(lines[:-1]) + cut, encoding="utf-8")  # killed mid-write
    assert len(episodes(out)) == 5

    assert main([*base, "--out", str(out)]) == 0
    records = read_results(out).records
    [repair] = [r for r in records if r["record"] == "repair"]
    assert repair["dropped_text"] == cut and repair["line"] == len(lines)
    assert by_key(out) == reference and len(episodes(out)) == 6


def test_agent_errors_are_recorded_and_the_run_goes_on(tmp_path, capsys):
    out = tmp_path / "flaky.jsonl"
    rc = main(["--env", TOY, "--agent", "eval_toy_env:FlakyAgent", "--users", 4, "--seeds", 1,
               "--out", str(out), "--no-progress"])
    assert rc == 0
    eps = {e["user_index"]: e for e in episodes(out)}
    assert [eps[u]["status"] for u in range(4)] == ["ok", "agent_error", "agent_error", "ok"]
    raised = eps[1]["error"]
    assert raised["type"] == "ValueError" and "flaky agent failed on purpose" in raised["message"]
    assert "Traceback" in raised["traceback"] and raised["turn"] == 2
    assert len(eps[1]["messages"]) == 4  # the dialogue up to the failure is kept
    assert "returned int" in eps[2]["error"]["message"]
    text = capsys.readouterr().out
    assert "2 agent" in text


def test_bad_inputs_give_clear_messages(tmp_path, capsys):
    out = str(tmp_path / "x.jsonl")
    assert main(["--env", "Nope-v0", "--agent", "sop", "--out", out, "--no-progress"]) == 1
    assert "unknown env id 'Nope-v0'" in capsys.readouterr().err
    assert main(["--env", TOY, "--agent", "nope", "--out", out, "--no-progress"]) == 1
    assert "unknown agent 'nope'" in capsys.readouterr().err
    assert main(["--env", TOY, "--agent", "no_such_mod:Agent", "--out", out]) == 1
    assert "cannot load agent" in capsys.readouterr().err
    assert main(["--env", TOY, "--env-kwargs", '{"bogus": 1}', "--agent", AGENT, "--out", out]) == 1
    assert "rejected --env-kwargs" in capsys.readouterr().err
    for bad, why in (('{"a": 1', "not valid JSON"), ("[1, 2]", "must be a JSON object")):
        with pytest.raises(SystemExit) as exc:
            main(["--env", TOY, "--agent", AGENT, "--agent-kwargs", bad, "--out", out])
        assert exc.value.code == 2 and why in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--env", TOY, "--agent", AGENT, "--users", "0"])
    assert main(["--env", TOY, "--agent", AGENT, "--quality-judge", "nosuch.module:J",
                 "--out", out]) == 1
    assert "cannot load quality judge" in capsys.readouterr().err
    assert not Path(out).exists()


def test_config_mismatch_is_an_error_unless_add_run(tmp_path, capsys):
    out = str(tmp_path / "r.jsonl")
    base = ["--env", TOY, "--agent", AGENT, "--users", 2, "--seeds", 1, "--out", out, "--no-progress"]
    assert main(base) == 0
    assert main([*base, "--agent-kwargs", '{"p_voucher": 1.0}']) == 1
    err = capsys.readouterr().err
    assert "another run" in err and "agent_kwargs" in err and "--add-run" in err
    assert main([*base, "--agent-kwargs", '{"p_voucher": 1.0}', "--add-run", "--quiet"]) == 0
    runs = load_runs([out])
    assert len(runs) == 2 and runs[1].metrics["v_rate"].mean == 1.0


def test_secrets_never_reach_the_results_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TOY_API_KEY", "env-secret-value-42")
    out = tmp_path / "leak.jsonl"
    key = "sk-test-abcdefghijklmnop1234"
    assert main(["--env", TOY, "--agent", "eval_toy_env:LeakyAgent", "--agent-kwargs",
                 json.dumps({"api_key": key}), "--users", 2, "--seeds", 1, "--out", str(out),
                 "--no-progress", "--quiet"]) == 0
    text = out.read_text() + out.with_suffix(".md").read_text()
    assert key not in text and "abcdefghijklmnop" not in text
    assert '"api_key": "***"' in text and "backend refused key ***" in text


def test_quality_judge_fills_comm_and_logic_labelled_heuristic(tmp_path, capsys):
    out = tmp_path / "j.jsonl"
    assert main(["--env", TOY, "--agent", AGENT, "--users", 2, "--seeds", 2, "--out", str(out),
                 "--quality-judge", "eval_toy_env:HeuristicLengthJudge", "--no-progress"]) == 0
    ep = episodes(out)[0]
    assert ep["quality"]["heuristic"] is True and ep["quality"]["comm_total"] == 17.0
    assert ep["quality"]["logic_total"] == 6.0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| j "))
    assert "17.00 ± 0.00 (heuristic)" in row and "6.00 ± 0.00 (heuristic)" in row


def test_quality_judge_instance_programmatically(tmp_path):
    from eval_toy_env import HeuristicLengthJudge

    from interactcs_gym.evaluation import evaluate

    result = evaluate(TOY, AGENT, users=2, seeds=1, out=tmp_path / "p.jsonl",
                      quality_judge=HeuristicLengthJudge(), progress=False)
    assert result.config.quality_judge == "eval_toy_env:HeuristicLengthJudge"
    assert "(heuristic)" in result.report_markdown and result.counts["ok"] == 2


def test_env_without_user_index_falls_back_to_seeds(tmp_path, capsys):
    out = tmp_path / "plain.jsonl"
    assert main(["--env", "eval_toy_env:EvalToyPlain-v0", "--agent", AGENT, "--users", 3,
                 "--seeds", 1, "--out", str(out), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "users are drawn by the episode seeds" in captured.err
    eps = episodes(out)
    assert {e["user_selection"] for e in eps} == {"seed"} and {e["status"] for e in eps} == {"ok"}
    assert len({e["final_info"]["task"]["user"] for e in eps}) == 3
    assert "## Generic dialogue env" in captured.out  # no metric_family declared: generic columns


def test_too_many_users_for_the_env_fails_fast(tmp_path, capsys):
    out = tmp_path / "n.jsonl"
    assert main(["--env", TOY, "--env-kwargs", '{"num_users": 2}', "--agent", AGENT,
                 "--users", 3, "--out", str(out)]) == 1
    assert "--users 3 but the env has 2 users" in capsys.readouterr().err


def test_report_subcommand_table_and_plot(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    common = ["--env", TOY, "--users", 3, "--seeds", 2, "--no-progress", "--quiet"]
    assert main([*common, "--agent", AGENT, "--agent-kwargs", '{"p_voucher": 0.0}', "--out", str(a)]) == 0
    assert main([*common, "--agent", AGENT, "--agent-kwargs", '{"p_voucher": 1.0}', "--out", str(b)]) == 0
    md, png = tmp_path / "report.md", tmp_path / "pareto.png"
    proc = run_cli("report", a, b, "--out", md, "--plot", png)
    assert proc.returncode == 0, proc.stderr
    table = md.read_text()
    rows = [line for line in table.splitlines() if line.startswith(("| a ", "| b "))]
    assert len(rows) == 2 and "0.0 ± 0.0" in rows[0] and "100.0 ± 0.0" in rows[1]
    assert table in proc.stdout
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 5000
    missing = run_cli("report", tmp_path / "none.jsonl")
    assert missing.returncode == 1 and "no such results file" in missing.stderr


def test_config_file_sets_defaults_and_flags_override(tmp_path):
    cfg = tmp_path / "run.yaml"
    out = tmp_path / "c.jsonl"
    cfg.write_text(f"env: {TOY}\nagent: {AGENT}\nusers: 2\nseeds: 1\nout: {out}\n"
                   "agent_kwargs: {p_voucher: 1.0}\nno_progress: true\nquiet: true\n")
    assert main(["--config", str(cfg), "--users", "3"]) == 0
    eps = episodes(out)
    assert len(eps) == 3 and all(e["final_info"]["voucher_issued"] for e in eps)
    cfg.write_text("bogus: 1\n")
    with pytest.raises(SystemExit):
        main(["--config", str(cfg)])


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_with_status_130_and_resumes(tmp_path):
    args = ["--env", TOY, "--env-kwargs", '{"delay": 0.05}', "--agent", AGENT, "--users", 4,
            "--seeds", 2, "--no-progress", "--out", tmp_path / "int.jsonl"]
    out = tmp_path / "int.jsonl"
    # A shell's background job inherits SIGINT ignored, and so would the CLI: give it the default.
    proc = subprocess.Popen([sys.executable, "-m", "interactcs_gym.evaluate", *map(str, args)],
                            cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (out.exists() and out.read_text().count('"episode"') >= 2):
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "rerun the same command to resume" in err
    result = read_results(out)
    assert result.truncated_tail is None and 2 <= len(result.episodes()) < 8
    assert run_cli(*args).returncode == 0 and len(episodes(out)) == 8


def test_unknown_metric_family_is_a_clear_error(tmp_path, capsys):
    assert main(["--env", TOY, "--agent", AGENT, "--metric-family", "nope", "--users", 1,
                 "--seeds", 1, "--out", str(tmp_path / "m.jsonl")]) == 1
    assert "unknown metric family 'nope'" in capsys.readouterr().err


def test_quality_judge_by_name_goes_through_the_judges_factory(tmp_path, capsys):
    import interactcs_gym.judges as judges

    out = tmp_path / "h.jsonl"
    rc = main(["--env", TOY, "--agent", AGENT, "--users", 2, "--seeds", 1, "--out", str(out),
               "--quality-judge", "heuristic", "--no-progress"])
    captured = capsys.readouterr()
    if not hasattr(judges, "make_quality_judge"):  # the judges package of this checkout has none yet
        assert rc == 1 and "no interactcs_gym.judges.make_quality_judge" in captured.err
        return
    assert rc == 0, captured.err
    quality = episodes(out)[0]["quality"]
    assert quality["heuristic"] is True and 0 <= quality["comm_total"] <= 28
    assert "(heuristic)" in captured.out
    assert main(["--env", TOY, "--agent", AGENT, "--out", str(tmp_path / "u.jsonl"),
                 "--quality-judge", "no-such-judge"]) == 1
    assert "no-such-judge" in capsys.readouterr().err


def test_retry_errors_replays_failed_episodes_and_supersedes_them(tmp_path, monkeypatch, capsys):
    out = tmp_path / "retry.jsonl"
    base = ["--env", TOY, "--agent", "eval_toy_env:BackendAgent", "--users", 3, "--seeds", 1,
            "--out", str(out), "--no-progress", "--quiet"]
    monkeypatch.setenv("EVAL_TOY_BACKEND_DOWN", "1")
    assert main(base) == 0
    assert {e["status"] for e in episodes(out)} == {"agent_error"}
    monkeypatch.delenv("EVAL_TOY_BACKEND_DOWN")
    assert main(base) == 0 and "ran 0, already recorded 3" in capsys.readouterr().err  # no retry
    assert main([*base, "--retry-errors"]) == 0
    assert len(episodes(out)) == 6  # the failed lines stay in the file ...
    [run] = load_runs([out])        # ... and the retried ones supersede them
    assert run.episodes == 3 and run.counts["ok"] == 3 and run.counts["agent_error"] == 0
    assert main([*base, "--retry-errors"]) == 0 and len(episodes(out)) == 6  # nothing left to retry


def test_a_dead_chat_server_stops_the_run_unscored_and_a_rerun_resumes(tmp_path, monkeypatch,
                                                                       capsys):
    out = tmp_path / "backend.jsonl"
    base = ["--env", TOY, "--agent", "eval_toy_env:ChatServerAgent", "--users", 5, "--seeds", 1,
            "--out", str(out), "--no-progress", "--quiet"]
    monkeypatch.setenv("EVAL_TOY_BACKEND_DOWN", "1")
    assert main(base) == 3                       # stopped after 3 back-end failures in a row
    assert "failed 3 episodes in a row" in capsys.readouterr().err
    assert [e["status"] for e in episodes(out)] == ["backend_error"] * 3
    [run] = load_runs([out])
    assert run.counts["backend_error"] == 3 and run.counts["agent_error"] == 0
    assert all(agg.n == 0 for agg in run.metrics.values())   # nothing scored
    monkeypatch.delenv("EVAL_TOY_BACKEND_DOWN")
    assert main(base) == 0                       # no --retry-errors needed
    assert "ran 5, already recorded 0" in capsys.readouterr().err
    [run] = load_runs([out])
    assert run.episodes == 5 and run.counts["ok"] == 5 and run.counts["backend_error"] == 0


def test_a_failing_quality_judge_is_recorded_not_fatal(tmp_path, capsys):
    out = tmp_path / "bj.jsonl"
    assert main(["--env", TOY, "--agent", AGENT, "--users", 2, "--seeds", 1, "--out", str(out),
                 "--quality-judge", "eval_toy_env:BrokenJudge", "--no-progress"]) == 0
    quality = episodes(out)[0]["quality"]
    assert quality["error"] == "TimeoutError: judge back-end timed out"
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| bj "))
    assert "2 judge" in row and "n/a" in row
