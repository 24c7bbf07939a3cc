"""Throughput of the chat back-ends on the tiny local model (CPU): sequential vs batched.

    python benchmarks/llm_backends.py [--requests 16] [--max-tokens 16]

Builds the tiny model, starts ``transformers serve`` on it and times (1) the HTTP back-end, one
request after the other vs ``chat_batch`` (concurrent requests), (2) the local transformers
back-end, one ``generate`` per conversation vs batched ``generate`` (left padding). Prints a
Markdown table. The figures depend on the machine (``transformers serve`` without continuous
batching answers one request at a time, so concurrency helps it little; vLLM batches them).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=16)
    args = parser.parse_args()

    from chat_server import TransformersServer
    from cmpo.tiny_model import build_tiny_model
    from interactcs_gym.llm import make_backend

    convs = [[{"role": "system", "content": "You are the after-sales agent of a food-delivery platform."},
              {"role": "user", "content": f"My order number {i} arrived cold, I want a refund."}]
             for i in range(args.requests)]
    gen = {"max_tokens": args.max_tokens, "temperature": 1.0}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model = str(build_tiny_model(Path(tmp) / "tiny"))
        with TransformersServer(model) as server:
            http = make_backend("openai", base_url=server.base_url, model=model, max_concurrency=8)
            http.chat(convs[0], **gen)  # warm-up
            seq = timed(lambda: [http.chat(c, **gen) for c in convs])
            par = timed(lambda: http.chat_batch(convs, **gen))
            rows += [("http (transformers serve), sequential", seq), ("http, chat_batch (8 threads)", par)]
        local = make_backend("transformers", model=model, device="cpu", batch_size=args.requests)
        local.chat(convs[0], **gen)
        seq = timed(lambda: [local.chat(c, **gen) for c in convs])
        par = timed(lambda: local.chat_batch(convs, **gen))
        rows += [("transformers, one generate per conversation", seq), ("transformers, batched generate", par)]

    print(f"| back-end ({args.requests} conversations, {args.max_tokens} new tokens) | seconds | conv/s |")
    print("|---|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.2f} | {args.requests / seconds:.1f} |")


if __name__ == "__main__":
    main()
