"""What one engine step's updates cost to cross the worker's pipe, without any model.

A spawned process sends `Updates` messages, as a worker does (k requests with one token each,
the engine's stats), through a `multiprocessing` pipe; this process receives and unpickles them.
Per message: CPU microseconds on each side (pickle and write, read and unpickle) and the
wall-clock round trip of one message and a small answer (what a token's delivery waits at least).
Compare them with a decode step (`llama_ceiling.py`): about 10 ms with one sequence and 60-100 ms
with 16 on a 2-core machine. Not a test: it prints a table.
"""

from __future__ import annotations

import argparse
import statistics
import time
from multiprocessing import get_context
from multiprocessing.connection import Connection

from aios_serve.engine.generation.interface import ChoiceUpdate, RequestUpdate
from aios_serve.engine.generation.worker.messages import Updates
from aios_serve.observability.engine_stats import EngineStats

STATS = EngineStats(
    running=16, waiting=0, kv_cache_usage=0.1, batch_size=16, prompt_passes=3, decode_passes=9
)


def batch(requests: int, step: int) -> Updates:
    """One step's updates: a token and its text per request."""
    items = [
        (request_id, RequestUpdate([ChoiceUpdate(0, " river", [1000 + step], [])]), None)
        for request_id in range(requests)
    ]
    return Updates(items, STATS, step)


def sender(conn: Connection, requests: int, messages: int, ping: bool) -> None:
    """The worker's side: pickle and write `messages` batches (with `ping`, wait for each answer)."""
    start = time.process_time()
    for step in range(messages):
        conn.send(batch(requests, step))
        if ping:
            conn.recv_bytes()
    conn.send(time.process_time() - start)


def run(requests: int, messages: int, ping: bool) -> tuple[float, float, float]:
    """Per message: sender CPU us, receiver CPU us, wall us."""
    context = get_context("spawn")
    ours, theirs = context.Pipe(duplex=True)
    child = context.Process(target=sender, args=(theirs, requests, messages, ping))
    child.start()
    theirs.close()
    ours.poll(60)  # the child has started and sends
    start_cpu, start_wall = time.process_time(), time.perf_counter()
    for _ in range(messages):
        message = ours.recv()
        assert isinstance(message, Updates)
        if ping:
            ours.send_bytes(b"k")
    wall, cpu = time.perf_counter() - start_wall, time.process_time() - start_cpu
    sender_cpu = ours.recv()
    child.join()
    return 1e6 * sender_cpu / messages, 1e6 * cpu / messages, 1e6 * wall / messages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print("| requests per step | sender CPU us/step | receiver CPU us/step | round trip us (median) |")
    print("|---|---|---|---|")
    for requests in (1, 16):
        streamed = [run(requests, args.messages, ping=False) for _ in range(args.repeats)]
        trips = [run(requests, args.messages // 5, ping=True)[2] for _ in range(args.repeats)]
        send_cpu = statistics.median(s for s, _, _ in streamed)
        receive_cpu = statistics.median(r for _, r, _ in streamed)
        print(f"| {requests} | {send_cpu:.1f} | {receive_cpu:.1f} | {statistics.median(trips):.0f} |")
    print(f"\nmessages={args.messages} repeats={args.repeats} (medians over the repeats)")


if __name__ == "__main__":
    main()
