"""Usage records: aggregates from /v1/usage and `aios-serve usage` equal the usage the responses
reported, per caller, model and API; only an admin key reads other callers; records survive a
crash of the server."""

from __future__ import annotations

import collections
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.configs import minilm, smol
from tests.e2e.server import Server

EMBEDDING = "minilm"
GENERATION = "smollm2"

KEYS = {"alice": "key-alice", "bob": "key-bob", "boss": "key-boss"}
API_KEYS = [
    {"name": "alice", "key": KEYS["alice"]},
    {"name": "bob", "key": KEYS["bob"]},
    {"name": "boss", "key": KEYS["boss"], "admin": True},
]
Key = tuple[str, str, str]  # caller, model, api


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Its own store (the aggregates are checked whole) and keys; the last test kills it."""
    models = [minilm(EMBEDDING), smol(GENERATION, n_threads=2, max_num_seqs=4)]
    with Server(tmp_path_factory.mktemp("usage-server"), models, api_keys=API_KEYS) as server:
        yield server


def client_for(server: Server, caller: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEYS[caller], max_retries=0, timeout=120)


def get_usage(server: Server, as_caller: str, **params: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {KEYS[as_caller]}"}
    return httpx.get(f"{server.url}/v1/usage", params=params, headers=headers, timeout=60)


@pytest.fixture(scope="module")
def expected(server: Server) -> dict[Key, collections.Counter[str]]:
    """Send requests as alice and bob; sum what each response reported as its usage."""
    sums: dict[Key, collections.Counter[str]] = collections.defaultdict(collections.Counter)

    def add(key: Key, prompt: int, completion: int, error: bool = False) -> None:
        sums[key].update(requests=1, prompt_tokens=prompt, completion_tokens=completion, errors=int(error))

    alice, bob = client_for(server, "alice"), client_for(server, "bob")
    for texts in (["usage is counted", "per caller"], "and per model"):
        response = alice.embeddings.create(model=EMBEDDING, input=texts)
        add(("alice", EMBEDDING, "embeddings"), response.usage.prompt_tokens, 0)
    completion = alice.completions.create(model=GENERATION, prompt="Hello", max_tokens=4, temperature=0)
    assert completion.usage is not None
    add(
        ("alice", GENERATION, "completions"),
        completion.usage.prompt_tokens,
        completion.usage.completion_tokens,
    )
    with pytest.raises(openai.BadRequestError):  # reaches the model, then fails: counted, no tokens
        alice.embeddings.create(model=EMBEDDING, input="x", dimensions=5)
    add(("alice", EMBEDDING, "embeddings"), 0, 0, error=True)
    with pytest.raises(openai.NotFoundError):  # never reaches a model: not counted
        alice.embeddings.create(model="no-such-model", input="x")

    stream = bob.chat.completions.create(
        model=GENERATION,
        messages=[{"role": "user", "content": "Say hi"}],
        max_tokens=4,
        stream=True,
        stream_options={"include_usage": True},
    )
    usage = [chunk.usage for chunk in stream if chunk.usage is not None][-1]
    add(("bob", GENERATION, "chat"), usage.prompt_tokens, usage.completion_tokens)
    response = bob.embeddings.create(model=EMBEDDING, input="bob's words")
    add(("bob", EMBEDDING, "embeddings"), response.usage.prompt_tokens, 0)
    return sums


def rolled_up(
    expected: dict[Key, collections.Counter[str]], fields: tuple[int, ...]
) -> dict[Any, dict[str, int]]:
    out: dict[Any, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for key, counts in expected.items():
        out[tuple(key[i] for i in fields)].update(counts)
    return {
        k: {f: int(c[f]) for f in ("requests", "errors", "prompt_tokens", "completion_tokens")}
        for k, c in out.items()
    }


def as_table(rows: list[dict[str, Any]], names: tuple[str, ...]) -> dict[Any, dict[str, int]]:
    fields = ("requests", "errors", "prompt_tokens", "completion_tokens")
    return {tuple(row[n] for n in names): {f: row[f] for f in fields} for row in rows}


def test_aggregates_equal_the_usage_responses_reported(
    server: Server, expected: dict[Key, collections.Counter[str]]
) -> None:
    body = get_usage(server, "boss", group_by="caller,model,api").json()
    assert as_table(body["data"], ("caller", "model", "api")) == rolled_up(expected, (0, 1, 2))
    for row in body["data"]:
        assert row["total_tokens"] == row["prompt_tokens"] + row["completion_tokens"]
    assert sum(c["completion_tokens"] for c in expected.values()) > 0

    by_caller = get_usage(server, "boss", group_by="caller").json()["data"]
    assert as_table(by_caller, ("caller",)) == rolled_up(expected, (0,))
    by_model = get_usage(server, "boss", group_by="model").json()["data"]
    assert as_table(by_model, ("model",)) == rolled_up(expected, (1,))
    totals = get_usage(server, "boss").json()["totals"]
    assert totals["requests"] == sum(c["requests"] for c in expected.values())


def test_a_normal_key_sees_only_its_own_usage(
    server: Server, expected: dict[Key, collections.Counter[str]]
) -> None:
    own = get_usage(server, "bob", group_by="caller,model,api").json()
    assert own["caller"] == "bob"
    assert {row["caller"] for row in own["data"]} == {"bob"}
    bob_only = {k: v for k, v in rolled_up(expected, (0, 1, 2)).items() if k[0] == "bob"}
    assert as_table(own["data"], ("caller", "model", "api")) == bob_only

    refused = get_usage(server, "bob", caller="alice")
    assert refused.status_code == 403
    assert refused.json()["error"]["param"] == "caller"
    assert get_usage(server, "bob", caller="bob").status_code == 200
    admin_view = get_usage(server, "boss", caller="alice", group_by="caller").json()["data"]
    assert [row["caller"] for row in admin_view] == ["alice"]
    assert httpx.get(f"{server.url}/v1/usage").status_code == 401


def test_buckets_and_time_window(server: Server, expected: dict[Key, collections.Counter[str]]) -> None:
    hourly = get_usage(server, "boss", bucket="hour", group_by="model").json()["data"]
    assert hourly and all(row["bucket"].endswith(":00:00Z") for row in hourly)
    assert sum(row["requests"] for row in hourly) == sum(c["requests"] for c in expected.values())
    daily = get_usage(server, "boss", bucket="day").json()["data"]
    assert all(row["bucket"].endswith("T00:00:00Z") for row in daily)
    future = get_usage(server, "boss", start=str(time.time() + 3600)).json()
    assert future["data"] == [] and future["totals"]["requests"] == 0
    window = get_usage(server, "boss", start="2000-01-01", end="2100-01-01T00:00:00Z").json()
    assert window["totals"]["requests"] == sum(c["requests"] for c in expected.values())


def test_report_page_follows_the_same_rule(
    server: Server, expected: dict[Key, collections.Counter[str]]
) -> None:
    def page(caller: str) -> str:
        headers = {"Authorization": f"Bearer {KEYS[caller]}"}
        response = httpx.get(f"{server.url}/usage/report", headers=headers, timeout=60)
        assert response.status_code == 200
        return response.text

    bobs = page("bob")
    assert "caller bob" in bobs and 'id="by-caller"' not in bobs
    assert f"<td>{GENERATION}</td><td>chat</td>" in bobs
    assert f"<td>{GENERATION}</td><td>completions</td>" not in bobs  # alice's
    admins = page("boss")
    assert "all callers" in admins and 'id="by-caller"' in admins
    assert "<td>alice</td>" in admins and "<td>bob</td>" in admins


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"group_by": "caller,colour"}, "group_by"),
        ({"bucket": "week"}, "bucket"),
        ({"start": "yesterday"}, "start"),
        ({"start": "2026-01-02", "end": "2026-01-01"}, "end"),
        ({"end": "-8.947793339549143e+171"}, "end"),  # found by the fuzzer: was a 500 (OverflowError)
        ({"start": "1e300"}, "start"),
    ],
)
def test_bad_parameters_are_400(server: Server, params: dict[str, str], param: str) -> None:
    response = get_usage(server, "boss", **params)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


def run_cli(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "aios_serve.cli", "usage", *args], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def cli_rows(output: str) -> dict[str, list[str]]:
    """The table's rows by their first cell (the header and rule lines skipped)."""
    lines = output.strip().splitlines()[2:]
    return {line.split()[0]: line.split()[1:] for line in lines}


def test_records_survive_a_crash_and_the_cli_prints_them(
    server: Server, expected: dict[Key, collections.Counter[str]]
) -> None:
    """Killed with SIGKILL, the server loses nothing committed; the CLI then reads its file."""
    response = client_for(server, "alice").embeddings.create(model=EMBEDDING, input="one more")
    late = ("alice", EMBEDDING, "embeddings")
    expected[late].update(requests=1, prompt_tokens=response.usage.prompt_tokens)
    over_http = run_cli("--url", server.url, "--api-key", KEYS["boss"], "--group-by", "caller")
    time.sleep(1.0)  # > the writer's batch interval: the background writer commits on its own
    server.process.kill()
    server.process.wait()

    from_file = run_cli("--config", str(server.config_path), "--group-by", "caller")
    assert from_file.splitlines()[0].split()[:3] == ["caller", "requests", "errors"]
    rows = cli_rows(from_file)
    for caller, counts in rolled_up(expected, (0,)).items():
        requests, errors, prompt, completion, total = (int(x) for x in rows[caller[0]])
        assert (requests, errors, prompt, completion) == (
            counts["requests"],
            counts["errors"],
            counts["prompt_tokens"],
            counts["completion_tokens"],
        )
        assert total == prompt + completion
    assert int(rows["total"][0]) == sum(c["requests"] for c in expected.values())
    # What the server answered over HTTP before the crash is what its file holds after it.
    assert cli_rows(over_http)["total"] == rows["total"]
    assert Path(server.data_dir, "usage.sqlite3").exists()


def test_cli_rejects_a_bad_window(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "aios_serve.cli", "usage", "--data-dir", str(tmp_path), "--start", "soon"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "start must be" in result.stderr
    assert run_cli("--data-dir", str(tmp_path)).strip() == "No usage recorded."
