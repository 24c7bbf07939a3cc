"""A scripted OpenAI-compatible chat server on the standard library, for fault tests.

Each POST to ``/v1/chat/completions`` takes the next step of ``script`` (then repeats ``default``);
a step may also be a callable of the request body returning a step:

* ``"ok"`` / ``"ok:<text>"``: a normal completion (default text ``"stub reply"``);
* ``"json:<text>"``: a completion whose content is ``<text>`` (alias of ok, reads better in tests);
* ``"500"``, ``"429"``, ``"400"``, ``"401"`` ...: that HTTP status with an OpenAI-style error body;
* ``"empty"``: a completion with empty content; ``"no_choices"``: ``{"choices": []}``;
* ``"invalid_json"``: status 200 with a body that is not JSON;
* ``"sleep:<s>"``: wait ``s`` seconds, then answer normally (to trigger client timeouts);
* ``"drop"``: close the connection without answering;
* ``"echo_key"``: HTTP 401 whose error message repeats the request's Authorization header (a
  server that leaks the key back: the client must redact it).

``requests`` records every request body and its headers; ``max_in_flight`` the most requests
handled at the same time.

``requests`` records every request body and its headers.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ChatStub:
    def __init__(self, script: list[str] | None = None, default: str = "ok",
                 reply=None) -> None:
        self.script = list(script or [])
        self.default = default
        self.reply = reply  # optional callable(body) -> content, used by "ok" steps
        self.requests: list[dict] = []
        self.in_flight = self.max_in_flight = 0
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                if self.path.rstrip("/").endswith("/models"):
                    stub._send(self, 200, {"object": "list", "data": [
                        {"id": "stub-model", "object": "model", "created": 0, "owned_by": "me"}]})
                else:
                    stub._send(self, 200, {"status": "ok"})

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with stub._lock:
                    stub.requests.append({"body": body, "headers": {k.lower(): v for k, v in self.headers.items()}})
                    step = stub.script.pop(0) if stub.script else stub.default
                    step = step(body) if callable(step) else step
                    stub.in_flight += 1
                    stub.max_in_flight = max(stub.max_in_flight, stub.in_flight)
                try:
                    stub._play(self, step, body)
                finally:
                    with stub._lock:
                        stub.in_flight -= 1

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    # ------------------------------------------------------------------ replies
    @staticmethod
    def completion(content) -> dict:
        return {"id": "stub", "object": "chat.completion", "created": 0, "model": "stub-model",
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": content}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}

    @staticmethod
    def _send(handler, status: int, payload, raw: bytes | None = None) -> None:
        data = raw if raw is not None else json.dumps(payload).encode()
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout tests)
            pass

    def _play(self, handler, step: str, body: dict) -> None:
        kind, _, arg = step.partition(":")
        if kind == "sleep":
            time.sleep(float(arg))
            kind, arg = "ok", ""
        if kind in ("ok", "json"):
            content = arg or (self.reply(body) if self.reply else "stub reply")
            self._send(handler, 200, self.completion(content))
        elif kind.isdigit():
            self._send(handler, int(kind), {"error": {"message": f"stub error {kind}",
                                                      "type": "server_error", "code": int(kind)}})
        elif kind == "empty":
            self._send(handler, 200, self.completion(""))
        elif kind == "no_choices":
            self._send(handler, 200, {"id": "stub", "object": "chat.completion", "created": 0,
                                      "model": "stub-model", "choices": []})
        elif kind == "invalid_json":
            self._send(handler, 200, None, raw=b"{this is not json")
        elif kind == "echo_key":
            auth = handler.headers.get("Authorization", "")
            self._send(handler, 401, {"error": {"message": f"invalid key in {auth!r}",
                                                "type": "auth_error", "code": 401}})
        elif kind == "drop":
            handler.close_connection = True
            handler.connection.close()
        else:
            raise ValueError(f"unknown stub step {step!r}")


class ScriptedBackend:
    """An in-process ChatBackend answering from a list (str replies or exceptions to raise), then
    ``default``; ``prompts`` records every conversation it was sent, ``samplings`` the sampling
    arguments. Built lazily to keep this
    module importable without the package on the path."""

    def __new__(cls, replies=None, default="(no reply)"):
        from interactcs_gym.llm import ChatBackend

        class _Scripted(ChatBackend):
            def __init__(self):
                self.replies = list(replies or [])
                self.default = default
                self.prompts = []
                self.samplings = []

            def chat(self, messages, **sampling):
                self.prompts.append([dict(m) for m in messages])
                self.samplings.append(dict(sampling))
                reply = self.replies.pop(0) if self.replies else self.default
                if isinstance(reply, BaseException):
                    raise reply
                return reply(messages) if callable(reply) else reply

        return _Scripted()
