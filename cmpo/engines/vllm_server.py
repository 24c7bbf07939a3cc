"""A vLLM server as the rollout engine without CUDA: generation over HTTP, weights through a folder.

TRL's server client streams weights over NCCL, which needs CUDA. Here the trainer saves its
weights (safetensors) to a folder that the server can read, and asks the server to load them
through its development endpoint ``/collective_rpc``, which calls
:class:`~cmpo.engines.vllm_sync.WeightSyncExtension`'s ``cmpo_reload_weights`` in every worker
(tied embeddings included). Generation uses the OpenAI-compatible ``/v1/completions`` with token-id
prompts and ``return_token_ids``: no text is re-tokenised.

The server (on the same machine or a shared filesystem)::

    VLLM_SERVER_DEV_MODE=1 VLLM_CPU_KVCACHE_SPACE=1 python -m vllm.entrypoints.openai.api_server \\
        --model runs/tiny-vllm --port 8000 --enforce-eager --logprobs-mode processed_logprobs \\
        --worker-extension-cls cmpo.engines.vllm_sync.WeightSyncExtension

(``vllm serve`` is the same server, but vllm-cpu's ``vllm`` console script looks up a distribution
named ``vllm`` and fails.) :class:`VLLMServer` starts and stops one such process, as the tests do.
The same server answers the env's LLM roles (user simulator, judges) and the LLM agent through
their ``openai`` back-end.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from cmpo.engines.base import SamplingParams


def _post(url: str, body: dict[str, Any], timeout: float) -> Any:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            data = response.read()
    except urllib.error.HTTPError as err:
        raise RuntimeError(f"vLLM server: POST {url} -> HTTP {err.code}: "
                           f"{err.read().decode(errors='replace')[:500]}") from err
    return json.loads(data) if data else None


def _get(url: str, timeout: float) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


class VLLMServerGeneration:
    """TRL's ``VLLMGeneration`` interface (``generate``, ``sync_weights``) over a vLLM server's HTTP
    API. Only the main process talks to the server; with several processes, run the trainer's
    rollouts per process (each process sends its own prompts).

    Args:
        model: the policy (bare, not wrapped), saved to ``weights_dir`` at each sync.
        sampling: :class:`SamplingParams` of an agent turn.
        base_url: the server, e.g. ``http://127.0.0.1:8000`` (a trailing ``/v1`` is accepted).
        weights_dir: where weights are saved for the server to load (a temporary folder by default).
        timeout: seconds to wait for the server to come up, and for each request.
    """

    def __init__(self, model, sampling: SamplingParams, *, base_url: str, accelerator=None,
                 weights_dir: str | Path | None = None, timeout: float = 240.0) -> None:
        self.model, self.sampling, self.accelerator = model, sampling, accelerator
        self.base_url = base_url.rstrip("/").removesuffix("/v1")
        self.timeout = float(timeout)
        self.weights_dir = Path(weights_dir or tempfile.mkdtemp(prefix="cmpo-vllm-weights-"))
        self.served_model = self._wait_for_server()

    def _wait_for_server(self) -> str:
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                return _get(f"{self.base_url}/v1/models", timeout=5)["data"][0]["id"]
            except (OSError, KeyError, IndexError) as err:
                if time.monotonic() > deadline:
                    raise ConnectionError(f"no vLLM server at {self.base_url} after {self.timeout:.0f} s "
                                          f"({err})") from err
                time.sleep(1.0)

    def completion_request(self, prompts: list[list[int]]) -> dict[str, Any]:
        """The ``/v1/completions`` body for one agent turn per prompt."""
        s = self.sampling
        return {"model": self.served_model, "prompt": [list(p) for p in prompts],
                "max_tokens": s.max_new_tokens, "temperature": 0.0 if s.greedy else s.temperature,
                "top_p": 1.0 if s.greedy else s.top_p, "top_k": 0 if s.greedy else s.top_k,
                "logprobs": 0, "stop_token_ids": list(s.stop_token_ids), "return_token_ids": True,
                "skip_special_tokens": False}

    def generate(self, prompts, images=None, num_generations=1):
        body = _post(f"{self.base_url}/v1/completions", self.completion_request(prompts), self.timeout)
        choices = sorted(body["choices"], key=lambda c: c["index"])
        completions, logprobs = [], []
        for choice in choices:
            ids = list(choice["token_ids"])
            lps = (choice.get("logprobs") or {}).get("token_logprobs") or []
            if len(lps) != len(ids):
                raise RuntimeError(f"vLLM server returned {len(lps)} log-probs for {len(ids)} tokens")
            completions.append(ids)
            logprobs.append([[lp] for lp in lps])
        return prompts, completions, logprobs, None

    def sync_weights(self) -> None:
        """Save the policy's weights to ``weights_dir`` and have the server load them."""
        from cmpo.engines.vllm_sync import checkpoint_params

        main = self.accelerator is None or self.accelerator.is_main_process
        if main:
            from safetensors.torch import save_file

            self.weights_dir.mkdir(parents=True, exist_ok=True)
            tensors = {name: t.detach().contiguous().cpu() for name, t in checkpoint_params(self.model)}
            save_file(tensors, str(self.weights_dir / "model.safetensors"))
            _post(f"{self.base_url}/collective_rpc",
                  {"method": "cmpo_reload_weights", "args": [str(self.weights_dir.resolve())]},
                  self.timeout)
            _post(f"{self.base_url}/reset_prefix_cache", {}, self.timeout)
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VLLMServer:
    """``python -m vllm.entrypoints.openai.api_server`` on a loopback port, with the weight-sync
    extension, eager mode and processed log-probs; a context manager, or ``start()`` / ``stop()``.

    ``extra_args`` are appended to the command line (e.g. ``["--max-model-len", "4096"]``).
    """

    def __init__(self, model_dir: str | Path, *, port: int | None = None, kv_cache_gib: int = 1,
                 startup_timeout: float = 600.0, extra_args: list[str] | None = None) -> None:
        self.model = str(model_dir)
        self.port = port or free_port()
        self.kv_cache_gib = kv_cache_gib
        self.startup_timeout = startup_timeout
        self.extra_args = list(extra_args or [])
        self.proc: subprocess.Popen | None = None
        self.log_path = os.path.join(tempfile.mkdtemp(prefix="vllm-serve-"), "server.log")
        self._log = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL (``.../v1``)."""
        return f"{self.url}/v1"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", self.model,
                "--host", "127.0.0.1", "--port", str(self.port), "--enforce-eager",
                "--logprobs-mode", "processed_logprobs",
                "--worker-extension-cls", "cmpo.engines.vllm_sync.WeightSyncExtension",
                *self.extra_args]

    def start(self) -> "VLLMServer":
        env = dict(os.environ, VLLM_SERVER_DEV_MODE="1", VLLM_CPU_KVCACHE_SPACE=str(int(self.kv_cache_gib)),
                   HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(self.command(), stdout=self._log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vLLM server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(1.0)
        self.stop()
        raise RuntimeError(f"vLLM server not healthy after {self.startup_timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, n: int = 4000) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()[-n:]
        except OSError:
            return ""

    def __enter__(self) -> "VLLMServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
