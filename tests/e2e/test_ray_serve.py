"""Ray Serve on a local Ray instance: two replicas of the embedding model answer behind the
aios-serve ingress, and a killed replica is replaced while requests keep succeeding.

Needs ray[serve], which only .ray-venv has: run with `make test-ray` (skipped in the default run)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from aios_serve.config import ModelSpec, ServerConfig
from aios_serve.deploy.ray_serve import REPLICA_HEADER, deploy, route_of
from tests.e2e.server import free_port

ray = pytest.importorskip("ray", reason="ray[serve] is only in .ray-venv: make test-ray")
serve = pytest.importorskip("ray.serve")

EMBEDDING = "all-minilm-l6-v2"
INTERNAL_KEY = "ray-test-internal-key"
SPEC = ModelSpec(
    name=EMBEDDING,
    kind="embedding",
    bundled="all-minilm-l6-v2",
    deployment={"num_replicas": 2, "ray_actor_options": {"num_cpus": 0.5}},
)


@pytest.fixture(scope="module")
def ray_url() -> Iterator[str]:
    port = free_port()
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir="/tmp/ray-aios-test")
    try:
        deploy(ServerConfig(models=[SPEC]), "127.0.0.1", port, internal_key=INTERNAL_KEY)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if _embed(url).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        yield url
    finally:
        serve.shutdown()
        ray.shutdown()


def _embed(url: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/embeddings", json={"model": EMBEDDING, "input": ["ray"]}, timeout=60)


def _replicas_answering(url: str, requests: int) -> set[str]:
    """Replica names from the model's own route (behind Ray's proxy, as the ingress calls it)."""
    seen = set()
    for _ in range(requests):
        response = httpx.post(
            f"{url}{route_of(SPEC)}/v1/embeddings",
            json={"model": EMBEDDING, "input": "which replica"},
            headers={"Authorization": f"Bearer {INTERNAL_KEY}"},
            timeout=60,
        )
        if response.status_code == 200:
            seen.add(response.headers[REPLICA_HEADER])
    return seen


def test_two_replicas_answer_and_a_killed_one_is_replaced(ray_url: str) -> None:
    response = _embed(ray_url)
    assert response.status_code == 200, response.text
    assert len(response.json()["data"][0]["embedding"]) == 384
    replicas = _replicas_answering(ray_url, 30)
    assert len(replicas) == 2

    outcomes: list[tuple[float, int]] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                status = _embed(ray_url).status_code
            except httpx.HTTPError:
                status = -1
            outcomes.append((started, status))

    workers = [threading.Thread(target=load) for _ in range(2)]
    for worker in workers:
        worker.start()
    try:
        time.sleep(1)
        victim = sorted(replicas)[0]
        killed_at = time.monotonic()
        ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
        deadline = time.monotonic() + 180
        now_answering: set[str] = set()
        while time.monotonic() < deadline:
            now_answering = _replicas_answering(ray_url, 10)
            if len(now_answering) == 2 and victim not in now_answering:
                break
            time.sleep(2)
    finally:
        stop.set()
        for worker in workers:
            worker.join()
    assert victim not in now_answering and len(now_answering) == 2, now_answering
    after_kill = [status for started, status in outcomes if started >= killed_at]
    print(f"requests during replacement: {len(after_kill)}, failed: {sum(s != 200 for s in after_kill)}")
    assert after_kill and set(after_kill) == {200}
