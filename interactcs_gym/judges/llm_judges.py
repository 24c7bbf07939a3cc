"""LLM judges: the GenRM process judge and the Comm./Logic dialogue-quality judge.

Both prompt any chat back-end (:func:`interactcs_gym.llm.make_backend`, role ``"judge"``) to reason
first and then end with one JSON object, parse it strictly (every principle / dimension present,
every score on its scale), and re-ask at most ``max_reasks`` times, saying what was wrong. The
agent's words reach the judge only through :class:`~interactcs_gym.llm.prompting.UntrustedQuoter`
(fresh nonce per prompt), and a reply that merely copies a JSON object the agent wrote is rejected.

When no usable reply comes (malformed after the re-asks, or the back-end failed after its
retries) the outcome is a documented fallback, never an exception unless ``fallback="raise"``:

* process judge: ``fallback="rule"`` (default) scores the turn with the rule-based judge,
  ``"neutral"`` gives every principle 0.5; the TurnScore's ``source`` is ``"fallback:rule"`` /
  ``"fallback:neutral"`` and its ``rationale`` says why.
* quality judge: ``fallback="heuristic"`` (default) returns the heuristic judge's scores, which
  are flagged ``heuristic=True`` so that reports label them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from interactcs_gym.judges.base import (PRINCIPLE_SCORES, DialogueQualityJudge, ProcessRewardJudge,
                                        QualityScore, TurnContext, TurnScore)
from interactcs_gym.judges.principles import Principle, load_principles, process_reward
from interactcs_gym.judges.quality import COMMUNICATION, LOGIC, HeuristicQualityJudge, taxonomy
from interactcs_gym.judges.rule import RuleBasedProcessJudge
from interactcs_gym.llm import ChatBackend, ChatBackendError, make_backend
from interactcs_gym.llm.prompting import (StructuredReply, UntrustedQuoter, ask_structured,
                                          copies_untrusted, json_objects)

DEFAULT_SAMPLING = {"temperature": 0.0, "max_tokens": 768}
_WORD_SCORES = {"full": 1.0, "partial": 0.5, "violation": 0.0}


class JudgeError(RuntimeError):
    """An LLM judge produced no usable score and its fallback is ``"raise"``."""


def _backend(backend: ChatBackend | str | dict | None, backend_kwargs: dict[str, Any]) -> ChatBackend:
    return make_backend(backend, role="judge", **backend_kwargs)


def _rationale(raw: str) -> str:
    """The reasoning before the final JSON object (at most 2,000 characters)."""
    cut = raw.rfind("{")
    return (raw[:cut] if cut > 0 else raw).strip()[:2000]


def _quoted_dialogue(messages: list[dict[str, str]], quoter: UntrustedQuoter) -> str:
    lines = []
    for m in messages:
        if m.get("role") == "assistant":
            lines.append(f"[agent] {quoter.quote(m.get('content', ''))}")
        elif m.get("role") != "system":
            lines.append(f"[{m.get('role')}] {m.get('content', '')}")
    return "\n".join(lines) or "(none)"


def _agent_texts(messages: list[dict[str, str]]) -> list[str]:
    return [m.get("content", "") for m in messages if m.get("role") == "assistant"]


# ---------------------------------------------------------------------- process judge (GenRM)
class LLMProcessJudge(ProcessRewardJudge):
    """GenRM: an LLM scores each agent turn against the principles, in {0, 0.5, 1} each.

    Args:
        backend: a ChatBackend, a back-end name or config dict, or None for the environment
            (``INTERACTCS_JUDGE_LLM_*`` / ``INTERACTCS_LLM_*``); ``**backend_kwargs`` (``base_url``,
            ``model``, ``api_key``, ``timeout``, ``max_retries`` ...) go to it.
        principles: principles file or list (default: the packaged principles.yaml).
        max_reasks: re-asks after a malformed reply (default 2, so at most 3 calls per turn).
        fallback: ``"rule"``, ``"neutral"`` or ``"raise"`` (module docstring).
        sampling: sampling arguments (default temperature 0, max_tokens 768).
        include_system_prompt: show the judge the agent's system prompt (SOP and order data).
    """

    name = "llm"

    def __init__(self, backend: ChatBackend | str | dict | None = None, *,
                 principles: str | Path | list[Principle] | None = None, max_reasks: int = 2,
                 fallback: str = "rule", sampling: dict[str, Any] | None = None,
                 include_system_prompt: bool = True, **backend_kwargs: Any) -> None:
        if fallback not in ("rule", "neutral", "raise"):
            raise ValueError(f"fallback must be 'rule', 'neutral' or 'raise', got {fallback!r}")
        if max_reasks < 0:
            raise ValueError("max_reasks must be >= 0")
        self.principles = load_principles(principles)
        self.backend = _backend(backend, backend_kwargs)
        self.max_reasks, self.fallback = max_reasks, fallback
        self.sampling = {**DEFAULT_SAMPLING, **(sampling or {})}
        self.include_system_prompt = include_system_prompt
        self._rule = RuleBasedProcessJudge(self.principles) if fallback == "rule" else None

    # ------------------------------------------------------------------ API
    def score_turn(self, ctx: TurnContext) -> TurnScore:
        prompt, _ = self.prompt(ctx)
        return self._finish(ctx, self._ask(prompt, ctx, None))

    def score_turns(self, contexts: list[TurnContext]) -> list[TurnScore]:
        """First attempts in one ``chat_batch`` call; re-asks one by one."""
        prompts = [self.prompt(ctx)[0] for ctx in contexts]
        try:
            firsts: list[str | None] = list(self.backend.chat_batch(prompts, **self.sampling))
        except ChatBackendError:
            firsts = [None] * len(contexts)
        return [self._finish(ctx, self._ask(p, ctx, first)) for ctx, p, first in zip(contexts, prompts, firsts)]

    # ------------------------------------------------------------------ prompt and parsing
    def prompt(self, ctx: TurnContext) -> tuple[list[dict[str, str]], UntrustedQuoter]:
        """The judge's messages for one turn, and the quoter (nonce) used in them."""
        q = UntrustedQuoter("agent_turn")
        names = ", ".join(f'"{p.name}"' for p in self.principles)
        system = (
            "You audit one turn of a customer-service agent in a food-delivery platform's "
            "after-sales chat. For each principle, decide whether the turn under review complies: "
            "1 = full compliance, 0.5 = partial, 0 = violation. Reason briefly first, then end your "
            "answer with exactly one JSON object of the form "
            f'{{"scores": {{"<principle>": 0 | 0.5 | 1, ...}}}} with every principle ({names}). '
            + q.explain())
        principles = "\n".join(
            f"- {p.name} (weight {p.weight:g}): {p.description}"
            + "".join(f"\n    {k}: {v}" for k, v in p.rubric.items()) for p in self.principles)
        msgs = ctx.messages
        last = max((i for i, m in enumerate(msgs) if m.get("role") == "assistant"), default=len(msgs))
        parts = [f"## Principles\n{principles}"]
        if self.include_system_prompt and msgs and msgs[0].get("role") == "system":
            parts.append(f"## The agent's instructions (SOP and order data)\n{msgs[0]['content']}")
        if ctx.scenario:
            parts.append(f"## Order facts\n{json.dumps(ctx.scenario, ensure_ascii=False, default=str)}")
        if ctx.state:
            parts.append(f"## Session state before this turn\n{json.dumps(ctx.state, default=str)}")
        parts.append(f"## Dialogue before the turn\n{_quoted_dialogue(msgs[:last], q)}")
        parts.append(f"## Turn under review (agent turn {ctx.turn})\n"
                     f"raw turn: {q.quote(msgs[last]['content'] if last < len(msgs) else ctx.response)}\n"
                     f"protocol: {'well formed' if ctx.format_ok else 'MALFORMED'}; "
                     f"action: {ctx.action or 'none recognised'}")
        parts.append("Score the turn under review. Reason first, then the JSON object.")
        return [{"role": "system", "content": system}, {"role": "user", "content": "\n\n".join(parts)}], q

    def parse(self, raw: str, ctx: TurnContext) -> dict[str, float]:
        """The scores of the last JSON object that holds them; ValueError says what is wrong."""
        candidates = [o.get("scores", o) for o in json_objects(raw)]
        candidates = [c for c in candidates if isinstance(c, dict) and
                      any(p.name in c for p in self.principles)]
        if not candidates:
            raise ValueError("no JSON object with principle scores found")
        obj = candidates[-1]
        if copies_untrusted(obj, _agent_texts(ctx.messages)) or \
                copies_untrusted({"scores": obj}, _agent_texts(ctx.messages)):
            raise ValueError("the scores copy a JSON object written by the agent")
        missing = [p.name for p in self.principles if p.name not in obj]
        if missing:
            raise ValueError(f"missing scores for {missing}")
        return {p.name: _principle_score(p.name, obj[p.name]) for p in self.principles}

    # ------------------------------------------------------------------ helpers
    def _ask(self, prompt, ctx: TurnContext, first: str | None) -> StructuredReply:
        reminder = ('End with one JSON object {"scores": {...}} giving every principle '
                    f"({', '.join(p.name for p in self.principles)}) a score of 0, 0.5 or 1.")
        return ask_structured(self.backend, prompt, lambda raw: self.parse(raw, ctx),
                              max_reasks=self.max_reasks, reminder=reminder,
                              sampling=self.sampling, first_reply=first)

    def _finish(self, ctx: TurnContext, reply: StructuredReply) -> TurnScore:
        if reply.ok:
            return TurnScore(reply.value, process_reward(reply.value, self.principles),
                             _rationale(reply.raw or ""), source="llm")
        why = f"LLM judge fallback: {reply.failure()}"
        if self.fallback == "raise":
            raise JudgeError(why)
        if self.fallback == "rule":
            score = self._rule.score_turn(ctx)
            return TurnScore(score.scores, score.reward, f"{why} | rule judge: {score.rationale or 'all rules met'}",
                             source="fallback:rule")
        scores = {p.name: 0.5 for p in self.principles}
        return TurnScore(scores, process_reward(scores, self.principles), why, source="fallback:neutral")


def _principle_score(name: str, value: Any) -> float:
    if isinstance(value, dict) and "score" in value:
        value = value["score"]
    if isinstance(value, str):
        value = _WORD_SCORES.get(value.strip().lower(), value)
    if isinstance(value, bool):
        raise ValueError(f"score of {name!r} must be 0, 0.5 or 1, got {value!r}")
    try:
        score = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"score of {name!r} must be 0, 0.5 or 1, got {value!r}") from None
    if score not in PRINCIPLE_SCORES:
        raise ValueError(f"score of {name!r} must be 0, 0.5 or 1, got {value!r}")
    return score


# ---------------------------------------------------------------------- dialogue quality
class LLMQualityJudge(DialogueQualityJudge):
    """Comm. (7 x 0-4) and Logic (3 x 0-4) of a whole dialogue by an LLM (paper A.1.2).

    Args: as :class:`LLMProcessJudge`; ``fallback`` is ``"heuristic"`` (default) or ``"raise"``.
    """

    heuristic = False
    name = "llm"

    def __init__(self, backend: ChatBackend | str | dict | None = None, *, max_reasks: int = 2,
                 fallback: str = "heuristic", sampling: dict[str, Any] | None = None,
                 include_system_prompt: bool = True, **backend_kwargs: Any) -> None:
        if fallback not in ("heuristic", "raise"):
            raise ValueError(f"fallback must be 'heuristic' or 'raise', got {fallback!r}")
        if max_reasks < 0:
            raise ValueError("max_reasks must be >= 0")
        self.backend = _backend(backend, backend_kwargs)
        self.max_reasks, self.fallback = max_reasks, fallback
        self.sampling = {**DEFAULT_SAMPLING, **(sampling or {})}
        self.include_system_prompt = include_system_prompt
        self._heuristic = HeuristicQualityJudge()

    def score_dialogue(self, messages: list[dict[str, str]],
                       scenario: dict[str, Any] | None = None) -> QualityScore:
        prompt = self.prompt(messages, scenario)
        reminder = ('End with one JSON object {"communication": {...}, "logic": {...}} giving each of '
                    f"{', '.join(COMMUNICATION)} and {', '.join(LOGIC)} a score from 0 to 4.")
        reply = ask_structured(self.backend, prompt, lambda raw: self.parse(raw, messages),
                               max_reasks=self.max_reasks, reminder=reminder, sampling=self.sampling)
        if reply.ok:
            comm, logic = reply.value
            return QualityScore(comm, logic, heuristic=False, rationale=_rationale(reply.raw or ""))
        why = f"LLM quality judge fallback: {reply.failure()}"
        if self.fallback == "raise":
            raise JudgeError(why)
        score = self._heuristic.score_dialogue(messages, scenario)
        score.rationale = f"{why} | heuristic scores used"
        return score

    def prompt(self, messages: list[dict[str, str]], scenario: dict[str, Any] | None = None) -> list[dict[str, str]]:
        q = UntrustedQuoter("agent_turn")
        tax = taxonomy()

        def section(group: str) -> str:
            return "\n".join(
                f"- {name}: {d['description'].strip()} Anchors: "
                + "; ".join(f"{k} = {v}" for k, v in d["anchors"].items())
                for name, d in tax[group].items())

        system = ("You evaluate the quality of a customer-service agent in a food-delivery after-sales "
                  "dialogue. Score each Communication dimension and each Logic area from 0 to 4 "
                  "(integers; 4 is best). Reason briefly first, then end with exactly one JSON object "
                  '{"communication": {"<dimension>": <0-4>, ...}, "logic": {"<area>": <0-4>, ...}}. '
                  + q.explain())
        parts = [f"## Communication (0-28)\n{section('communication')}",
                 f"## Logic (0-12)\n{section('logic')}"]
        if self.include_system_prompt and messages and messages[0].get("role") == "system":
            parts.append(f"## The agent's instructions (SOP and order data)\n{messages[0]['content']}")
        if scenario:
            parts.append(f"## Order facts\n{json.dumps(scenario, ensure_ascii=False, default=str)}")
        parts.append(f"## Dialogue\n{_quoted_dialogue(messages, q)}")
        parts.append("Score the agent. Reason first, then the JSON object.")
        return [{"role": "system", "content": system}, {"role": "user", "content": "\n\n".join(parts)}]

    def parse(self, raw: str, messages: list[dict[str, str]]) -> tuple[dict[str, float], dict[str, float]]:
        candidates = [o for o in json_objects(raw) if isinstance(o.get("communication"), dict)
                      and isinstance(o.get("logic"), dict)]
        if not candidates:
            raise ValueError('no JSON object with "communication" and "logic" scores found')
        obj = candidates[-1]
        if copies_untrusted(obj, _agent_texts(messages)):
            raise ValueError("the scores copy a JSON object written by the agent")
        return (_dimension_scores(obj["communication"], COMMUNICATION),
                _dimension_scores(obj["logic"], LOGIC))


def _dimension_scores(obj: dict[str, Any], names: tuple[str, ...]) -> dict[str, float]:
    missing = [n for n in names if n not in obj]
    if missing:
        raise ValueError(f"missing scores for {missing}")
    out = {}
    for n in names:
        value = obj[n]["score"] if isinstance(obj[n], dict) and "score" in obj[n] else obj[n]
        if isinstance(value, bool):
            raise ValueError(f"score of {n!r} must be a number from 0 to 4, got {value!r}")
        try:
            score = float(value)
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"score of {n!r} must be a number from 0 to 4, got {value!r}") from None
        if not 0 <= score <= 4:  # NaN fails this too
            raise ValueError(f"score of {n!r} must be from 0 to 4, got {value!r}")
        out[n] = score
    return out
