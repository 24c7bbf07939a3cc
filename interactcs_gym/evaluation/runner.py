"""The evaluation loop: an agent on an env id over N users x S seeds, one JSONL record per episode.

Episode keys and seeds (reproducible, independent of N, S and of the order episodes run in):

* the key of an episode is ``(user_index u, seed_index s)`` with ``u`` in ``0..N-1`` and ``s`` in
  ``0..S-1``; :func:`episode_seeds` gives its env and agent seeds;
* an env that takes ``options={"user_index": u}`` (FDS: test user u) is reset with
  ``env.reset(seed=base_seed + s, options={"user_index": u})`` and the agent with
  ``agent.reset(seed=(base_seed + s) * 100003 + u)``: the convention of
  ``benchmarks/fds_reference_agents.py``, so the CLI reproduces the README's reference table;
* an env that does not (the first reset with the option raises while a plain reset works) is reset
  with ``env.reset(seed=x)`` and the agent with ``agent.reset(seed=x)``, where ``x`` is the first
  32-bit word of ``numpy.random.SeedSequence(base_seed, spawn_key=(u, s))``: distinct seeds then
  draw distinct users. Which way was used is recorded in every episode (``user_selection``).

Because every episode is reseeded, a run killed half-way and resumed gives exactly the records (and
metrics) an uninterrupted run gives, whatever order the episodes ran in.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from interactcs_gym.core.metrics import (
    ALL_STATUSES,
    STATUS_BACKEND_ERROR,
    STATUS_OK,
    MetricFamily,
)
from interactcs_gym.core.names import load_attr
from interactcs_gym.evaluation.metrics import family_spec_for_env, register_metric_family, resolve_family
from interactcs_gym.evaluation.redact import Scrubber, redact_kwargs
from interactcs_gym.evaluation.store import (
    SCHEMA_VERSION,
    ResultsFileError,
    ResultsStore,
    latest_by_key,
    utc_now,
)
from interactcs_gym.evaluation.episode import (DEFAULT_MAX_STEPS, EpisodePlay, act_batch_step,
                                               can_act_batch, play_episode)

#: Agent seed of episode (u, s) when the env selects users: (base_seed + s) * stride + u.
AGENT_SEED_STRIDE = 100_003
#: A run stops after this many back-end errors in a row (a dead server): rerunning resumes it.
DEFAULT_MAX_BACKEND_FAILURES = 3
#: Episodes played in lockstep by an agent with ``act_batch`` (``--batch-size``).
DEFAULT_BATCH_SIZE = 32


class EvaluationError(RuntimeError):
    """A bad input (env id, agent, kwargs, results file) reported to the user in one message."""


def episode_seeds(base_seed: int, user_index: int, seed_index: int, *,
                  by_user_index: bool = True) -> tuple[int, int]:
    """``(env seed, agent seed)`` of episode (u, s); see the module docstring.

    ``by_user_index``: env seed = base_seed + s, agent seed = env seed * 100003 + u.
    Otherwise both are ``SeedSequence(base_seed, spawn_key=(u, s)).generate_state(1)[0]``.
    """
    if by_user_index:
        env_seed = int(base_seed) + int(seed_index)
        return env_seed, env_seed * AGENT_SEED_STRIDE + int(user_index)
    seq = np.random.SeedSequence(int(base_seed), spawn_key=(int(user_index), int(seed_index)))
    seed = int(seq.generate_state(1, dtype=np.uint32)[0])
    return seed, seed


# ---------------------------------------------------------------------------- config
@dataclass
class EvalConfig:
    """What defines a run; its hash (of the redacted form) keys the episodes of a results file.

    ``users`` and ``seeds`` are not part of it: rerunning with more users or seeds extends a run.
    """

    env_id: str
    agent: str
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    agent_kwargs: dict[str, Any] = field(default_factory=dict)
    quality_judge: str | None = None
    quality_judge_kwargs: dict[str, Any] = field(default_factory=dict)
    base_seed: int = 0

    def redacted(self, found: list[str] | None = None) -> dict[str, Any]:
        return redact_kwargs(asdict(self), found=found)

    def config_hash(self) -> str:
        canonical = json.dumps(self.redacted(), sort_keys=True, ensure_ascii=False, default=repr)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def score_quality(judge: Any, messages: list[dict[str, str]],
                  scenario: Mapping[str, Any] | None) -> dict[str, Any]:
    """The judge's Comm/Logic scores of a dialogue as a record field; a failing judge is recorded."""
    name = getattr(judge, "name", None) or type(judge).__name__
    try:
        score = judge.score_dialogue(messages, scenario=dict(scenario or {}))
    except Exception as exc:  # a judge back-end failure must not lose the episode
        return {"judge": name, "error": f"{type(exc).__name__}: {exc}"[:1000],
                "heuristic": bool(getattr(judge, "heuristic", False))}
    return {"judge": name, "heuristic": bool(getattr(score, "heuristic", getattr(judge, "heuristic", False))),
            "communication": dict(score.communication), "logic": dict(score.logic),
            "comm_total": score.comm_total, "logic_total": score.logic_total,
            "rationale": score.rationale}


def run_episode(env: Any, agent: Any, *, user_index: int, seed_index: int, seed: int,
                agent_seed: int | None = None, use_user_index: bool = True, quality_judge: Any = None,
                max_steps: int = DEFAULT_MAX_STEPS) -> dict[str, Any]:
    """Play episode (u, s) with :func:`~interactcs_gym.evaluation.episode.play_episode` and return
    its record (without the run-level fields): the keys, the played episode (status, dialogue,
    per-turn entries, final info, timing) and the quality judge's scores of a finished dialogue."""
    options = {"user_index": int(user_index)} if use_user_index else None
    agent_seed = seed if agent_seed is None else agent_seed
    played = play_episode(env, agent, seed=seed, options=options, agent_seed=agent_seed,
                          max_steps=max_steps)
    return episode_record(played, user_index=user_index, seed_index=seed_index, seed=seed,
                          agent_seed=agent_seed, use_user_index=use_user_index,
                          quality_judge=quality_judge)


def episode_record(played: dict[str, Any], *, user_index: int, seed_index: int, seed: int,
                   agent_seed: int, use_user_index: bool, quality_judge: Any = None) -> dict[str, Any]:
    """The record of episode (u, s) from its played episode (``play_episode``'s dict, consumed):
    the keys, the played episode and the quality judge's scores of a finished dialogue."""
    quality, timing = None, played.pop("timing")
    timing["judge_s"] = 0.0
    if quality_judge is not None and played["status"] == STATUS_OK:
        t = time.perf_counter()
        quality = score_quality(quality_judge, played["messages"], played["final_info"].get("task"))
        timing["judge_s"] = time.perf_counter() - t
        timing["wall_s"] += timing["judge_s"]
    return {
        "record": "episode",
        "schema": SCHEMA_VERSION,
        "user_index": int(user_index),
        "seed_index": int(seed_index),
        "seed": int(seed),
        "agent_seed": int(agent_seed),
        "user_selection": "options" if use_user_index else "seed",
        **played,
        "quality": quality,
        "timing": timing,
    }


def run_episodes_batched(envs: list[Any], agent: Any, keys: list[tuple[int, int]], *, base_seed: int,
                         use_user_index: bool = True, quality_judge: Any = None,
                         max_steps: int = DEFAULT_MAX_STEPS) -> Iterator[dict[str, Any]]:
    """Play the episodes ``keys`` in lockstep, ``len(envs)`` at a time, with ``agent.act_batch``;
    yield each episode's record (as :func:`run_episode` returns it) as soon as it ends.

    Env ``envs[i]`` plays slot i; a slot whose episode ends takes the next pending key, so the
    rows of one ``act_batch`` call may be at different turns. Each episode is reset exactly as
    :func:`run_episode` resets it (:func:`episode_seeds`); the agent is not ``reset`` per episode:
    its rows' agent seeds go to ``act_batch(..., seeds=...)``.
    """
    pending = list(keys)[::-1]
    slots: list[tuple[EpisodePlay, tuple[int, int, int, int]] | None] = [None] * len(envs)

    def finish(play: EpisodePlay, meta: tuple[int, int, int, int]) -> dict[str, Any]:
        u, s, env_seed, agent_seed = meta
        return episode_record(play.record(), user_index=u, seed_index=s, seed=env_seed,
                              agent_seed=agent_seed, use_user_index=use_user_index,
                              quality_judge=quality_judge)

    while True:
        finished = []
        for i, env in enumerate(envs):  # fill the free slots
            while slots[i] is None and pending:
                u, s = pending.pop()
                env_seed, agent_seed = episode_seeds(base_seed, u, s, by_user_index=use_user_index)
                play = EpisodePlay(env, seed=env_seed, max_steps=max_steps,
                                   options={"user_index": int(u)} if use_user_index else None)
                play.begin()
                if play.done:
                    finished.append(finish(play, (u, s, env_seed, agent_seed)))
                else:
                    slots[i] = (play, (u, s, env_seed, agent_seed))
        yield from finished
        active = [slot for slot in slots if slot is not None]
        if not active:
            return
        act_batch_step(agent, [play for play, _ in active], [meta[3] for _, meta in active])
        for i, slot in enumerate(slots):
            if slot is not None and slot[0].done:
                slots[i] = None
                yield finish(*slot)


# ---------------------------------------------------------------------------- building the pieces
def make_env(env_id: str, env_kwargs: Mapping[str, Any]) -> Any:
    import gymnasium as gym

    import interactcs_gym  # noqa: F401  (registers the suite's ids)

    try:
        return gym.make(env_id, **dict(env_kwargs))
    except gym.error.Error as exc:
        known = ", ".join(interactcs_gym.registered_ids())
        raise EvaluationError(f"unknown env id {env_id!r}: {exc}. Ids of this suite: {known} "
                              f"(or 'module:EnvId' to import a module that registers it)") from exc
    except ModuleNotFoundError as exc:
        raise EvaluationError(f"cannot make env {env_id!r}: {exc}") from exc
    except (TypeError, ValueError) as exc:
        raise EvaluationError(f"env {env_id!r} rejected --env-kwargs "
                              f"{redact_kwargs(dict(env_kwargs))}: {exc}") from exc


def make_agent(spec: Any, agent_kwargs: Mapping[str, Any]) -> tuple[Any, str]:
    """The agent and the spec string recorded for it."""
    from interactcs_gym.agents import load_agent

    if not isinstance(spec, str):
        if not callable(getattr(spec, "act", None)):
            raise EvaluationError(f"{spec!r} is not an agent: it has no act(observation, info)")
        return spec, f"{type(spec).__module__}:{type(spec).__qualname__}"
    try:
        return load_agent(spec, **dict(agent_kwargs)), spec
    except ValueError as exc:
        raise EvaluationError(str(exc)) from exc
    except TypeError as exc:
        raise EvaluationError(f"cannot build agent {spec!r} with --agent-kwargs "
                              f"{redact_kwargs(dict(agent_kwargs))}: {exc}") from exc


def make_quality_judge(spec: Any, judge_kwargs: Mapping[str, Any]) -> tuple[Any, str | None]:
    """A dialogue-quality judge from an instance, a ``module:Class`` path or a name resolved by
    ``interactcs_gym.judges.make_quality_judge(name, **kwargs)``."""
    if spec is None:
        return None, None
    if not isinstance(spec, str):
        judge, name = spec, f"{type(spec).__module__}:{type(spec).__qualname__}"
    elif ":" in spec:
        try:
            judge = load_attr(spec, what="quality judge")(**dict(judge_kwargs))
        except (ValueError, TypeError) as exc:
            raise EvaluationError(f"cannot load quality judge {spec!r}: {exc}") from exc
        name = spec
    else:
        try:
            from interactcs_gym.judges import make_quality_judge as factory
        except ImportError as exc:
            raise EvaluationError(
                f"quality judge {spec!r}: this installation has no "
                f"interactcs_gym.judges.make_quality_judge ({exc}); pass 'module:Class' of a "
                f"DialogueQualityJudge instead") from exc
        try:
            judge = factory(spec, **dict(judge_kwargs))
        except (ValueError, TypeError, KeyError, ImportError) as exc:
            raise EvaluationError(f"cannot make quality judge {spec!r}: {exc}") from exc
        name = spec
    if not callable(getattr(judge, "score_dialogue", None)):
        raise EvaluationError(f"quality judge {name} has no score_dialogue(messages, scenario)")
    return judge, name


def probe_user_selection(env: Any, users: int, base_seed: int) -> bool:
    """True when the env takes ``options={"user_index": u}`` for u in 0..users-1 (see module doc).

    An env exposing ``num_users`` is checked against it without a probe.
    """
    num_users = getattr(env.unwrapped, "num_users", None)
    if isinstance(num_users, int):
        if users > num_users:
            raise EvaluationError(f"--users {users} but the env has {num_users} users")
        return True
    seed = int(base_seed)
    try:
        env.reset(seed=seed, options={"user_index": 0})
    except Exception as exc:
        try:
            env.reset(seed=seed)
        except Exception as exc2:
            raise EvaluationError(f"the env fails on reset(seed={seed}): "
                                  f"{type(exc2).__name__}: {exc2}") from exc2
        print(f"note: the env does not take options={{'user_index': u}} ({type(exc).__name__}: "
              f"{exc}); users are drawn by the episode seeds instead", file=sys.stderr)
        return False
    if users > 1:
        try:
            env.reset(seed=seed, options={"user_index": users - 1})
        except Exception as exc:
            raise EvaluationError(f"the env takes user_index 0 but not {users - 1} "
                                  f"({type(exc).__name__}: {exc}); lower --users") from exc
    return True


# ---------------------------------------------------------------------------- results-file checks
def check_compatible(store: ResultsStore, config: EvalConfig, config_hash: str, *, add_run: bool) -> None:
    """Refuse to mix a different run into a file unless ``add_run`` (``--add-run``) says so."""
    others = {r.get("config_hash") for r in store.records
              if r.get("record") in ("run", "episode") and r.get("config_hash") != config_hash}
    if not others or add_run:
        return
    headers = [r for r in store.records if r.get("record") == "run" and r.get("config_hash") in others]
    mine = config.redacted()
    lines = []
    for header in headers[-1:]:
        theirs = header.get("config") or {}
        diff = [f"  {k}: file has {json.dumps(theirs.get(k))}, this run has {json.dumps(mine.get(k))}"
                for k in sorted(set(mine) | set(theirs)) if theirs.get(k) != mine.get(k)]
        lines += diff
    raise EvaluationError(
        f"{store.path} already holds episodes of another run (config hash {', '.join(sorted(map(str, others)))}, "
        f"this run: {config_hash}). Differences:\n" + ("\n".join(lines) or "  (config not recorded)")
        + "\nUse another --out, or --add-run to keep both runs in this file (the report shows each).")


# ---------------------------------------------------------------------------- the loop
@dataclass
class EvaluationResult:
    config: EvalConfig
    config_hash: str
    family: MetricFamily
    family_spec: str
    out: Path
    records: list[dict[str, Any]]
    ran: int
    skipped: int
    wall_s: float
    report_path: Path | None = None
    report_markdown: str = ""
    interrupted: bool = False
    counts: dict[str, int] = field(default_factory=dict)
    #: Why the run stopped before its last episode (e.g. the chat back-end kept failing), else None.
    stopped: str | None = None


def evaluate(env_id: str, agent: Any, *, users: int, seeds: int, out: str | Path,
             env_kwargs: Mapping[str, Any] | None = None,
             agent_kwargs: Mapping[str, Any] | None = None,
             quality_judge: Any = None, quality_judge_kwargs: Mapping[str, Any] | None = None,
             base_seed: int = 0, metric_family: str | MetricFamily | None = None,
             add_run: bool = False, retry_errors: bool = False, progress: bool = True,
             max_steps: int = DEFAULT_MAX_STEPS, write_report: bool = True,
             max_backend_failures: int = DEFAULT_MAX_BACKEND_FAILURES,
             batch_size: int = DEFAULT_BATCH_SIZE) -> EvaluationResult:
    """Evaluate ``agent`` on ``env_id`` over ``users`` x ``seeds`` episodes, resuming ``out``.

    Episodes already recorded in ``out`` under the same config hash are skipped (with
    ``retry_errors``, those recorded as errors are run again and the new line supersedes the old);
    episodes recorded as ``backend_error`` are always run again. After ``max_backend_failures``
    back-end errors in a row the run stops (``EvaluationResult.stopped`` says why): every finished
    episode is kept and rerunning the same command resumes once the server is back.

    An agent with ``act_batch(observations, infos, *, seeds)`` plays ``batch_size`` episodes in
    lockstep, one env per slot (:func:`run_episodes_batched`; same seeds and records, each appended
    as soon as it ends); ``batch_size=1`` or any other agent plays one episode at a time.
    """
    from tqdm.auto import tqdm

    from interactcs_gym.evaluation.report import markdown_report, summarize_run

    if users < 1 or seeds < 1:
        raise EvaluationError(f"--users and --seeds must be >= 1, got {users} and {seeds}")
    if batch_size < 1:
        raise EvaluationError(f"--batch-size must be >= 1, got {batch_size}")
    env_kwargs, agent_kwargs = dict(env_kwargs or {}), dict(agent_kwargs or {})
    env = make_env(env_id, env_kwargs)
    try:
        agent_obj, agent_spec = make_agent(agent, agent_kwargs)
        judge, judge_name = make_quality_judge(quality_judge, quality_judge_kwargs or {})
    except BaseException:
        env.close()
        raise
    config = EvalConfig(env_id=env_id, agent=agent_spec, env_kwargs=env_kwargs,
                        agent_kwargs=agent_kwargs if isinstance(agent, str) else {},
                        quality_judge=judge_name, quality_judge_kwargs=dict(quality_judge_kwargs or {}),
                        base_seed=int(base_seed))
    secrets: list[str] = []
    redacted = config.redacted(found=secrets)
    scrub = Scrubber(secrets)
    config_hash = config.config_hash()
    try:
        if isinstance(metric_family, MetricFamily):
            register_metric_family(metric_family)  # so that the recorded name resolves
            metric_family = metric_family.name
        try:
            family_spec = metric_family or family_spec_for_env(env_id, env)
            family = resolve_family(family_spec)
        except (ValueError, TypeError) as exc:
            raise EvaluationError(str(exc)) from exc
        use_user_index = probe_user_selection(env, users, base_seed)
        if not use_user_index:  # a fresh env: gymnasium's env checker breaks after a failed reset
            env.close()
            env = make_env(env_id, env_kwargs)
        keys = [(u, s) for s in range(seeds) for u in range(users)]
        out = Path(out)
        t0 = time.perf_counter()
        ran, interrupted, stopped, backend_streak = 0, False, None, 0
        try:
            store = ResultsStore(out).open()
        except ResultsFileError as exc:
            raise EvaluationError(str(exc)) from exc
        try:
            check_compatible(store, config, config_hash, add_run=add_run)
            done = latest_by_key(store.episodes(config_hash))
            todo = [k for k in keys if k not in done
                    or done[k].get("status") == STATUS_BACKEND_ERROR
                    or (retry_errors and done[k].get("status") != STATUS_OK)]
            import interactcs_gym

            store.append(scrub({
                "record": "run", "schema": SCHEMA_VERSION, "config_hash": config_hash,
                "config": redacted, "metric_family": family_spec, "users": users, "seeds": seeds,
                "already_recorded": len(keys) - len(todo), "to_run": len(todo),
                "user_selection": "options" if use_user_index else "seed", "started_at": utc_now(),
                "interactcs_gym_version": interactcs_gym.__version__,
                "python": sys.version.split()[0],
            }))
            bar = tqdm(total=len(keys), initial=len(keys) - len(todo), unit="episode",
                       desc=f"{agent_spec} on {env_id}", disable=not progress, dynamic_ncols=True)
            batched = batch_size > 1 and can_act_batch(agent_obj)
            slot_envs = [env]
            try:
                if batched:
                    slot_envs += [make_env(env_id, env_kwargs) for _ in range(min(batch_size, len(todo)) - 1)]
                    played = run_episodes_batched(slot_envs, agent_obj, todo, base_seed=base_seed,
                                                  use_user_index=use_user_index,
                                                  quality_judge=judge, max_steps=max_steps)
                else:
                    played = (run_episode(env, agent_obj, user_index=u, seed_index=s, seed=env_seed,
                                          agent_seed=agent_seed, use_user_index=use_user_index,
                                          quality_judge=judge, max_steps=max_steps)
                              for u, s in todo
                              for env_seed, agent_seed in [episode_seeds(base_seed, u, s,
                                                                         by_user_index=use_user_index)])
                for record in played:
                    u, s = record["user_index"], record["seed_index"]
                    record = {"record": "episode", "schema": SCHEMA_VERSION,
                              "config_hash": config_hash, "env_id": env_id, "agent": agent_spec,
                              "metric_family": family_spec, **record}
                    done[(u, s)] = store.append(scrub(record))
                    ran += 1
                    bar.update(1)
                    if record["status"] != STATUS_OK:
                        bar.write(f"episode user={u} seed={s}: {record['status']}: "
                                  f"{record['error']['type']}: {record['error']['message'][:200]}")
                    backend_streak = (backend_streak + 1
                                      if record["status"] == STATUS_BACKEND_ERROR else 0)
                    if backend_streak >= max_backend_failures:
                        stopped = (f"the chat back-end failed {backend_streak} episodes in a row "
                                   f"(last: {record['error']['message'][:200]}); every finished "
                                   "episode is kept: rerun the same command to resume")
                        break
            except KeyboardInterrupt:
                interrupted = True
            finally:
                bar.close()
                for extra in slot_envs[1:]:
                    extra.close()
        finally:
            store.close()
    finally:
        env.close()

    records = [done[k] for k in keys if k in done]
    counts = {status: sum(r.get("status") == status for r in records) for status in ALL_STATUSES}
    result = EvaluationResult(config=config, config_hash=config_hash, family=family,
                              family_spec=family_spec, out=out, records=records, ran=ran,
                              skipped=len(keys) - len(todo), wall_s=time.perf_counter() - t0,
                              interrupted=interrupted, counts=counts, stopped=stopped)
    if write_report and records:
        summary = summarize_run(records, family, name=out.stem, config=redacted,
                                planned=(users, seeds))
        result.report_markdown = markdown_report([summary], sources=[str(out)])
        result.report_path = (out.with_suffix(".md") if out.suffix != ".md"
                              else out.with_name(out.name + ".report.md"))
        result.report_path.write_text(result.report_markdown, encoding="utf-8")
    return result
