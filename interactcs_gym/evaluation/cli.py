"""``python -m interactcs_gym.evaluate`` (console script ``interactcs-evaluate``).

Evaluate an agent (resumable; rerun the same command after a kill to finish the run)::

    python -m interactcs_gym.evaluate --env FDS-Hard-v0 --agent sop --users 80 --seeds 3 \\
        --out results/sop-hard.jsonl

Turn results files into one Markdown table and a Pareto plot::

    python -m interactcs_gym.evaluate report results/*.jsonl --out report.md --plot pareto.png

``--config run.yaml`` sets defaults for the evaluation flags (keys are the flag names with ``_``);
flags on the command line override it. Exit status: 0 done, 1 bad input or results file, 2 usage
error, 3 stopped by a failing chat back-end, 130 interrupted (the recorded episodes are kept; rerun
to resume). Every error is one line on stderr (``--debug`` shows the traceback instead), and a bad
``--out`` (a folder, under a file, not writable) is refused before anything is written.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

from interactcs_gym.core import untrusted
from interactcs_gym.evaluation.runner import (DEFAULT_BATCH_SIZE, DEFAULT_MAX_BACKEND_FAILURES,
                                              DEFAULT_MAX_STEPS, EvaluationError, evaluate)
from interactcs_gym.evaluation.store import ResultsFileError


def json_object(text: str) -> dict[str, Any]:
    """argparse type: a JSON object (``'{"split": "train"}'``)."""
    try:
        value = untrusted.loads(text)
    except untrusted.UntrustedJSONError as exc:
        raise argparse.ArgumentTypeError(f"{exc}: {text[:200]!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object like '{{\"key\": 1}}', "
                                         f"got a JSON {type(value).__name__}: {text!r}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def check_output_path(path: Path, flag: str = "--out") -> None:
    """EvaluationError unless a file can be written at ``path``: not a folder, no file in the way
    of its folders, the nearest existing folder writable. Checked before anything is written."""
    if path.is_dir():
        raise EvaluationError(f"{flag} {path} is a folder; give a file path such as {path / 'run.jsonl'}")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise EvaluationError(f"{flag} {path}: {parent} is a file, not a folder")
            try:  # a probe file, deleted on close: the only test that also holds for root
                with tempfile.TemporaryFile(dir=parent):
                    pass
            except OSError as exc:
                raise EvaluationError(f"{flag} {path}: cannot write in {parent} ({exc.strerror})") from None
            break
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise EvaluationError(f"{flag} {path}: no permission to read and write it")


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text.split(":")[-1]).strip("-").lower() or "run"


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m interactcs_gym.evaluate",
        description="Evaluate an agent on an env id over N users x S seeds; episodes are appended "
                    "to a JSONL results file as they finish and a rerun resumes it. "
                    "Subcommand: 'report FILES... --out report.md --plot pareto.png'.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", type=Path, default=None,
                   help="YAML file of defaults for these flags (e.g. 'users: 80'); flags override it")
    p.add_argument("--env", required=True, help="env id, e.g. FDS-Hard-v0 (or 'module:EnvId')")
    p.add_argument("--env-kwargs", type=json_object, default={},
                   help="JSON object of kwargs for gym.make, e.g. '{\"split\": \"train\"}'")
    p.add_argument("--agent", required=True,
                   help="agent short name (sop, always-voucher, never-voucher, random, llm) or "
                        "'module:Class'")
    p.add_argument("--agent-kwargs", type=json_object, default={},
                   help="JSON object of kwargs for the agent's constructor")
    p.add_argument("--users", type=positive_int, default=80, help="users 0..N-1 (episode key)")
    p.add_argument("--seeds", type=positive_int, default=3, help="seed indices 0..S-1 per user")
    p.add_argument("--base-seed", type=int, default=0,
                   help="episode (u, s): env.reset(seed=base_seed + s, options={'user_index': u}), "
                        "agent.reset(seed=(base_seed + s) * 100003 + u); for envs without "
                        "user_index both seeds are SeedSequence(base_seed, spawn_key=(u, s))")
    p.add_argument("--out", type=Path, default=None,
                   help="JSONL results file (resumed if it exists); default results/<agent>-<env>.jsonl")
    p.add_argument("--quality-judge", default=None,
                   help="dialogue-quality judge for Comm/Logic: a name for "
                        "interactcs_gym.judges.make_quality_judge or 'module:Class'")
    p.add_argument("--quality-judge-kwargs", type=json_object, default={},
                   help="JSON object of kwargs for the quality judge")
    p.add_argument("--metric-family", default=None,
                   help="override the env's metric family (fds, generic, or 'module:attribute')")
    p.add_argument("--add-run", action="store_true",
                   help="allow --out to already hold a run with a different config; both are kept "
                        "and reported separately")
    p.add_argument("--retry-errors", action="store_true",
                   help="run again the episodes recorded as agent/env errors (the new line "
                        "supersedes the old one); back-end errors are always run again")
    p.add_argument("--max-backend-failures", type=positive_int,
                   default=DEFAULT_MAX_BACKEND_FAILURES,
                   help="stop the run (exit status 3) after this many episodes in a row failed "
                        "because a chat back-end (LLM server) kept failing; rerun to resume")
    p.add_argument("--batch-size", type=positive_int, default=DEFAULT_BATCH_SIZE,
                   help="episodes played in lockstep (one env each, one act_batch call per turn) "
                        "by an agent with act_batch, e.g. policy; 1 = one episode at a time; "
                        "agents without act_batch always play one at a time")
    p.add_argument("--max-steps", type=positive_int, default=DEFAULT_MAX_STEPS,
                   help="safety bound on env steps per episode")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--quiet", action="store_true", help="do not print the report")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    return p


def make_report_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m interactcs_gym.evaluate report",
        description="Summarise results files (one row per run) as Markdown and a Pareto plot.")
    p.add_argument("results", nargs="+", type=Path, help="JSONL results files")
    p.add_argument("--out", type=Path, default=None, help="write the Markdown report here")
    p.add_argument("--plot", type=Path, default=None,
                   help="write the Pareto plot (utility vs cost) here, e.g. pareto.png")
    p.add_argument("--x", default=None, help="metric key of the x axis (default: the family's cost, "
                                             "v_rate for FDS)")
    p.add_argument("--y", default=None, help="metric key of the y axis (default: the family's "
                                             "utility, sat for FDS)")
    p.add_argument("--title", default="Evaluation report")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    return p


def _apply_config_file(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """Set parser defaults from ``--config file.yaml`` (unknown keys are errors)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", type=Path, default=None)
    known, _ = pre.parse_known_args(argv)
    if known.config is None:
        return
    import yaml

    try:
        data = yaml.safe_load(known.config.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        parser.error(f"--config {known.config}: {exc}")
    if not isinstance(data, dict):
        parser.error(f"--config {known.config}: expected a mapping of flag names to values")
    dests = {a.dest: a for a in parser._actions}
    defaults = {}
    for key, value in data.items():
        dest = str(key).replace("-", "_")
        if dest not in dests or dest in ("help", "config"):
            parser.error(f"--config {known.config}: unknown key {key!r}")
        action = dests[dest]
        action.required = False
        if isinstance(value, str) and action.type not in (None, str):
            value = action.type(value)
        defaults[dest] = Path(value) if dest == "out" and value is not None else value
    parser.set_defaults(**defaults)


def run_main(argv: Sequence[str]) -> int:
    parser = make_parser()
    _apply_config_file(parser, argv)
    args = parser.parse_args(argv)
    return _guarded(_run, args)


def report_main(argv: Sequence[str]) -> int:
    return _guarded(_report, make_report_parser().parse_args(argv))


def _guarded(command, args: argparse.Namespace) -> int:
    """Run ``command(args)``: any error is one line on stderr and exit status 1 (``--debug``: the
    traceback); Ctrl-C before the first episode is 130."""
    try:
        return command(args)
    except KeyboardInterrupt:
        print("interrupted before the first episode", file=sys.stderr)
        return 130
    except (EvaluationError, ResultsFileError) as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        if args.debug:
            raise
        print(f"error: {_one_line(exc)} (rerun with --debug for the traceback)", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    out = args.out or Path("results") / f"{_slug(args.agent)}-{_slug(args.env)}.jsonl"
    check_output_path(out)
    result = evaluate(args.env, args.agent, users=args.users, seeds=args.seeds, out=out,
                      env_kwargs=args.env_kwargs, agent_kwargs=args.agent_kwargs,
                      quality_judge=args.quality_judge,
                      quality_judge_kwargs=args.quality_judge_kwargs, base_seed=args.base_seed,
                      metric_family=args.metric_family, add_run=args.add_run,
                      retry_errors=args.retry_errors, progress=not args.no_progress,
                      max_steps=args.max_steps, batch_size=args.batch_size,
                      max_backend_failures=args.max_backend_failures)
    if result.report_markdown and not args.quiet:
        print(result.report_markdown)
    errors = sum(n for status, n in result.counts.items() if status != "ok")
    print(f"{len(result.records)} episodes in {out} (ran {result.ran}, already recorded "
          f"{result.skipped}; {errors} errors) in {result.wall_s:.1f} s"
          + (f"; report {result.report_path}" if result.report_path else ""), file=sys.stderr)
    if result.stopped:
        print(f"stopped: {result.stopped}", file=sys.stderr)
        return 3
    if result.interrupted:
        print(f"interrupted: rerun the same command to resume ({out} keeps every finished episode)",
              file=sys.stderr)
        return 130
    return 0


def _report(args: argparse.Namespace) -> int:
    from interactcs_gym.evaluation.plots import pareto_plot
    from interactcs_gym.evaluation.report import load_runs, markdown_report

    for path, flag in ((args.out, "--out"), (args.plot, "--plot")):
        if path is not None:
            check_output_path(path, flag)
    summaries = load_runs(args.results)
    if not summaries:
        print("error: no episodes in " + ", ".join(map(str, args.results)), file=sys.stderr)
        return 1
    text = markdown_report(summaries, sources=[str(p) for p in args.results], title=args.title)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
        print(f"report: {args.out}", file=sys.stderr)
    if args.plot is not None:
        try:
            pareto_plot(summaries, args.plot, x=args.x, y=args.y)
        except (KeyError, ValueError) as exc:
            print(f"error: plot: {exc}", file=sys.stderr)
            return 1
        print(f"plot: {args.plot}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
    if argv and argv[0] == "report":
        return report_main(argv[1:])
    if argv and argv[0] == "run":
        argv = argv[1:]
    return run_main(argv)


if __name__ == "__main__":
    sys.exit(main())
