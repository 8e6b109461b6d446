"""The encoder part of the load mix: embeddings (single, batched, base64), rerank, score and
/v1/models against the bundled MiniLM, each answer checked against its single-request reference."""

from __future__ import annotations

import base64
import random
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np

MODEL = "all-minilm-l6-v2"
WORDS = [
    "apple",
    "river",
    "stone",
    "cloud",
    "engine",
    "garden",
    "violin",
    "copper",
    "desert",
    "lantern",
    "orbit",
    "meadow",
]
ENCODER_MIX: dict[str, int] = {
    "embed-one": 4,
    "embed-batch": 3,
    "embed-base64": 1,
    "rerank": 1,
    "score": 1,
    "models": 1,
}
"""The encoder kinds and their weights in the load test's MIX."""


def model_entry(dtype: str) -> dict[str, Any]:
    """The server config's embedding model."""
    return {"name": MODEL, "kind": "embedding", "bundled": MODEL, "options": {"dtype": dtype}}


def make_texts(count: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 60))) + f" #{i}" for i in range(count)]


@dataclass(frozen=True)
class Tolerance:
    """How far an answer under load may be from its single-request reference. In bfloat16 a
    row's values move with the batch around it (kernels block by the batch's token count), so
    a vector must point the same way (cosine) and be nearer its own reference than any other."""

    vector_atol: float | None  # element-wise, where the dtype gives batch-independent rows
    min_cosine: float
    score_atol: float


TOLERANCES = {
    "float32": Tolerance(vector_atol=1e-4, min_cosine=0.0, score_atol=1e-4),
    "bfloat16": Tolerance(vector_atol=None, min_cosine=0.9999, score_atol=1e-2),
}


@dataclass
class References:
    """What each request must answer, computed one request at a time before the load."""

    texts: list[str]
    vectors: dict[str, np.ndarray]
    query: str
    rerank: dict[int, float]
    score: list[float]
    tolerance: Tolerance = TOLERANCES["float32"]

    def nearest_text(self, vector: np.ndarray) -> str:
        """The reference text whose vector points most nearly the way `vector` does."""
        return max(self.texts, key=lambda text: float(np.dot(self.vectors[text], vector)))


def build_references(url: str, texts: list[str], dtype: str) -> References:
    with httpx.Client(base_url=url, timeout=60) as client:
        vectors = {}
        for text in texts:
            body = client.post("/v1/embeddings", json={"model": MODEL, "input": text}).json()
            vectors[text] = np.array(body["data"][0]["embedding"])
        query, documents = texts[0], texts[1:9]
        rerank = client.post(
            "/v1/rerank", json={"model": MODEL, "query": query, "documents": documents}
        ).json()
        score = client.post("/v1/score", json={"model": MODEL, "text_1": query, "text_2": documents}).json()
    return References(
        texts=texts,
        vectors=vectors,
        query=query,
        rerank={r["index"]: r["relevance_score"] for r in rerank["results"]},
        score=[d["score"] for d in score["data"]],
        tolerance=TOLERANCES["float32" if dtype == "float32" else "bfloat16"],
    )


def check_embeddings(
    body: dict[str, Any], sent: list[str], refs: References, base64_format: bool
) -> str | None:
    """Each vector equals its single-request reference, taken from the same server."""
    rows = sorted(body["data"], key=lambda d: d["index"])
    if len(rows) != len(sent):
        return f"{len(rows)} vectors for {len(sent)} inputs"
    for text, row in zip(sent, rows, strict=True):
        given = row["embedding"]
        vector = np.frombuffer(base64.b64decode(given), "<f4") if base64_format else np.array(given)
        reference, tolerance = refs.vectors[text], refs.tolerance
        if tolerance.vector_atol is not None and not np.allclose(
            vector, reference, atol=tolerance.vector_atol
        ):
            return f"embedding of {text[:30]!r} differs from its single-request reference"
        cosine = float(np.dot(vector, reference) / (np.linalg.norm(vector) * np.linalg.norm(reference)))
        if cosine < tolerance.min_cosine or refs.nearest_text(vector) != text:
            return f"embedding of {text[:30]!r}: cosine {cosine:.6f} to its reference, or nearer another"
    return None


def check_body(kind: str, body: dict[str, Any], sent: list[str], refs: References) -> str | None:
    """What is wrong with a 200 answer of `kind`, or None."""
    if kind.startswith("embed"):
        return check_embeddings(body, sent, refs, kind == "embed-base64")
    if kind == "rerank":
        got = {r["index"]: r["relevance_score"] for r in body["results"]}
        if got.keys() != refs.rerank.keys() or any(
            abs(got[i] - refs.rerank[i]) > refs.tolerance.score_atol for i in got
        ):
            return "rerank scores differ from the reference"
    elif kind == "score":
        got_scores = [d["score"] for d in body["data"]]
        if not np.allclose(got_scores, refs.score, atol=refs.tolerance.score_atol):
            return "score values differ from the reference"
    return None


async def encoder_request(
    client: httpx.AsyncClient, kind: str, rng: random.Random, refs: References
) -> tuple[int, str, str | None]:
    """Send one request of `kind`: its status, a short body for errors, and what is wrong with a
    200 answer (None when it matches its reference). Transport errors propagate."""
    documents = refs.texts[1:9]
    sent = rng.sample(refs.texts, rng.randint(2, 16)) if kind == "embed-batch" else [rng.choice(refs.texts)]
    if kind.startswith("embed"):
        body: dict[str, Any] = {"model": MODEL, "input": sent if kind == "embed-batch" else sent[0]}
        if kind == "embed-base64":
            body["encoding_format"] = "base64"
        response = await client.post("/v1/embeddings", json=body)
    elif kind == "rerank":
        response = await client.post(
            "/v1/rerank", json={"model": MODEL, "query": refs.query, "documents": documents}
        )
    elif kind == "score":
        response = await client.post(
            "/v1/score", json={"model": MODEL, "text_1": refs.query, "text_2": documents}
        )
    else:
        response = await client.get("/v1/models")
    if response.status_code != 200:
        return response.status_code, response.text[:200], None
    return 200, "", check_body(kind, response.json(), sent, refs)
