"""Results files -> per-run summaries -> a Markdown report (and, with :mod:`.plots`, a Pareto plot).

A *run* is the set of episodes of one config hash in one results file (a file written with
``--add-run`` holds several). Its metrics are those of its metric family, each as mean ± std over
seeds of the per-seed mean over users (:func:`~interactcs_gym.core.metrics.mean_std_over_seeds`).
"""

from __future__ import annotations

import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from interactcs_gym.core.metrics import (ALL_STATUSES, GENERIC_METRICS, STATUS_AGENT_ERROR,
                                         STATUS_BACKEND_ERROR, STATUS_ENV_ERROR, Aggregate, MetricFamily,
                                         summarize_episodes)
from interactcs_gym.evaluation.metrics import resolve_family
from interactcs_gym.evaluation.store import ResultsFileError, latest_by_key, read_results


@dataclass
class RunSummary:
    """One row of a report."""

    name: str
    env_id: str
    agent: str
    config_hash: str
    family: MetricFamily
    metrics: dict[str, Aggregate]
    episodes: int
    users: int
    seeds: int
    counts: dict[str, int]
    planned: tuple[int, int] | None = None
    judge: str | None = None
    heuristic: bool = False
    config: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    @property
    def complete(self) -> bool:
        return self.planned is None or self.episodes >= self.planned[0] * self.planned[1]


def summarize_run(records: list[Mapping[str, Any]], family: MetricFamily, *, name: str,
                  config: Mapping[str, Any] | None = None, planned: tuple[int, int] | None = None,
                  source: str = "") -> RunSummary:
    """Summarise the episode records of one run (one record per key)."""
    first = records[0] if records else {}
    qualities = [r.get("quality") for r in records if r.get("quality")]
    judged = [q for q in qualities if not q.get("error")]
    counts = {s: sum(r.get("status") == s for r in records) for s in ALL_STATUSES}
    counts["judge_error"] = len(qualities) - len(judged)
    return RunSummary(
        name=name, env_id=str(first.get("env_id", (config or {}).get("env_id", "?"))),
        agent=str(first.get("agent", (config or {}).get("agent", "?"))),
        config_hash=str(first.get("config_hash", "")), family=family,
        metrics=summarize_episodes(family, records), episodes=len(records),
        users=len({r["user_index"] for r in records}), seeds=len({r["seed_index"] for r in records}),
        counts=counts, planned=planned,
        judge=(qualities[0].get("judge") if qualities else (config or {}).get("quality_judge")),
        heuristic=any(q.get("heuristic") for q in judged), config=dict(config or {}), source=source)


def load_runs(paths: Iterable[str | Path]) -> list[RunSummary]:
    """Every run of every results file, in file order then first-appearance order."""
    summaries = []
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise ResultsFileError(f"{path}: no such results file")
        results = read_results(path)
        if results.truncated_tail is not None:
            print(f"warning: {path}: the last line is cut short (a killed or running evaluation); "
                  f"it is left out here and repaired when that evaluation resumes", file=sys.stderr)
        by_hash: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for record in results.episodes():
            by_hash[str(record.get("config_hash"))].append(record)
        headers = {str(r.get("config_hash")): r for r in results.runs()}  # the latest per hash
        for config_hash, episodes in by_hash.items():
            records = list(latest_by_key(episodes).values())
            header = headers.get(config_hash, {})
            name = path.stem if len(by_hash) == 1 else f"{path.stem}#{config_hash[:8]}"
            family = _family_of(records[-1].get("metric_family") or header.get("metric_family"))
            planned = (int(header["users"]), int(header["seeds"])) if "users" in header else None
            summaries.append(summarize_run(records, family, name=name, config=header.get("config"),
                                           planned=planned, source=str(path)))
    return summaries


def _family_of(spec: str | None) -> MetricFamily:
    if not spec:
        return GENERIC_METRICS
    try:
        return resolve_family(spec)
    except (ValueError, TypeError) as exc:
        print(f"warning: metric family {spec!r} unavailable ({exc}); reporting generic metrics",
              file=sys.stderr)
        return GENERIC_METRICS


# ---------------------------------------------------------------------------- Markdown
def _episodes_cell(s: RunSummary) -> str:
    cell = f"{s.users} × {s.seeds}"
    if not s.complete:
        cell += f" ({s.episodes}/{s.planned[0] * s.planned[1]}, incomplete)"
    return cell


def _errors_cell(s: RunSummary) -> str:
    parts = [f"{s.counts.get(k, 0)} {label}" for k, label in
             ((STATUS_AGENT_ERROR, "agent"), (STATUS_ENV_ERROR, "env"),
              (STATUS_BACKEND_ERROR, "back-end"), ("judge_error", "judge"))
             if s.counts.get(k, 0)]
    return ", ".join(parts) or "0"


def markdown_table(summaries: list[RunSummary]) -> str:
    """One Markdown table for runs of the same metric family."""
    family = summaries[0].family
    header = ["Run", "Env", "Agent", "Users × Seeds"] + [m.label for m in family.metrics] + ["Errors"]
    rows = [header, ["---"] * len(header)]
    for s in summaries:
        cells = [s.name, s.env_id, s.agent, _episodes_cell(s)]
        for m in family.metrics:
            cell = s.metrics[m.key].format(m)
            if m.judged and cell != "n/a" and s.heuristic:
                cell += " (heuristic)"
            cells.append(cell)
        cells.append(_errors_cell(s))
        rows.append(cells)
    return "\n".join("| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows)


def _notes(family: MetricFamily, summaries: list[RunSummary]) -> list[str]:
    notes = ["Each cell: mean ± std over seeds of the per-seed mean over users "
             "(population std); percentages ×100."]
    if any(m.judged for m in family.metrics):
        if any(s.metrics[m.key].mean is None for s in summaries for m in family.metrics if m.judged):
            notes.append("n/a: no dialogue-quality judge was configured (`--quality-judge`).")
        if any(s.heuristic for s in summaries):
            notes.append("(heuristic): scored by an offline heuristic judge, not an LLM judge.")
    notes += list(family.notes)
    helps = [f"{m.label} = {m.help}" for m in family.metrics if m.help]
    if helps:
        notes.append("Columns: " + "; ".join(helps) + ".")
    return notes


def markdown_report(summaries: list[RunSummary], *, sources: Iterable[str] = (),
                    title: str = "Evaluation report") -> str:
    """The full report: one section and table per metric family, then the notes."""
    lines = [f"# {title}", ""]
    sources = list(sources)
    if sources:
        lines += ["Results: " + ", ".join(f"`{s}`" for s in sources), ""]
    by_family: dict[str, list[RunSummary]] = defaultdict(list)
    for s in summaries:
        by_family[s.family.name].append(s)
    for runs in by_family.values():
        family = runs[0].family
        lines += [f"## {family.title}", "", markdown_table(runs), ""]
        lines += [f"* {n}" for n in _notes(family, runs)] + [""]
    return "\n".join(lines)
