"""The OpenVINO IR of a GGUF file, built once by OpenVINO GenAI and cached.

GenAI's ContinuousBatchingPipeline reads a GGUF file into an OpenVINO model and, with
`enable_save_ov_model`, saves it as `openvino_model.xml/.bin` beside the file it read. We build
it in a temporary folder (holding a symlink to the file) and rename the folder into place under
`cache_dir() / "openvino-ir" / <stem>-<sha256>-ov<version>`, so a half-written IR never counts,
holding a lock file beside it meanwhile, so a second process waits for the first one's build.
The saved model is the stateful one; `graph.py` makes it paged.
"""

from __future__ import annotations

import contextvars
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from aios_serve.backends.openvino_paged.mapped_file import releasing
from aios_serve.models.bundled import cache_dir, file_sha256

log = logging.getLogger("aios_serve.backends.openvino_paged")

IR_NAME = "openvino_model.xml"

_BUILDS = contextvars.ContextVar("openvino_ir_builds", default=True)


class NotBuilt(LookupError):
    """An IR or rewrite that `cached_only` found missing (a build would have made it)."""


@contextmanager
def cached_only() -> Iterator[None]:
    """Within it, a missing IR or rewrite raises NotBuilt instead of being built."""
    token = _BUILDS.set(False)
    try:
        yield
    finally:
        _BUILDS.reset(token)


def check_may_build(missing: Path) -> None:
    """Raise NotBuilt for `missing` inside `cached_only`."""
    if not _BUILDS.get():
        raise NotBuilt(missing)


def openvino_version() -> str:
    """The runtime's version, short enough for a folder name (`2026.4.1-22982`)."""
    import openvino

    return "-".join(openvino.get_version().split("-")[:2])


def ir_folder(weights: Path, label: str = "") -> Path:
    """Where an IR made from this file is cached: keyed by its content hash, what was made of it
    (`label`, empty for GenAI's IR of the file itself) and OpenVINO's version."""
    digest = file_sha256(weights)[:16]
    suffix = f".{label}" if label else ""
    return cache_dir() / "openvino-ir" / f"{weights.stem}-{digest}{suffix}-ov{openvino_version()}"


def remove_superseded(keep: Path, label: str, family: str, current: tuple[str, ...] = ()) -> list[Path]:
    """Remove the IRs cached beside `keep` (`ir_folder(weights, label)`) for the same file and
    OpenVINO version under another label that starts with `family` and is not one of the
    `current` ones (what an older aios-serve made: `own-blocks-v4` beside `own-blocks-v5`);
    return what was removed."""
    tail = f"-ov{openvino_version()}"
    head = keep.name.removesuffix(f"{label}{tail}")  # `<stem>-<sha16>.`
    if head == keep.name or not keep.parent.is_dir():
        return []
    stale = [
        folder
        for folder in keep.parent.iterdir()
        if folder != keep
        and folder.is_dir()
        and not any(folder.name == f"{head}{kept}{tail}" for kept in current)
        and folder.name.startswith(head + family)
        and folder.name.endswith(tail)
    ]
    for folder in stale:
        log.info("removing %s, superseded by %s", folder, keep.name)
        shutil.rmtree(folder, ignore_errors=True)
        lock_file(folder).unlink(missing_ok=True)
    return stale


def cached_ir(weights: Path) -> Path:
    """The IR's .xml for `weights` (a GGUF file GenAI decodes exactly), built on first use."""
    return cached(ir_folder(weights), lambda scratch: save_ir(weights, scratch))


def cached(folder: Path, build: Callable[[Path], object]) -> Path:
    """`folder / IR_NAME`, which `build(scratch)` writes into an empty folder on first use
    (NotBuilt inside `cached_only`); a process that finds another building it waits for that build."""
    xml = folder / IR_NAME
    if xml.is_file():
        return xml
    check_may_build(xml)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _building(folder):
        if not xml.is_file():
            _build(folder, build)
    return xml


@contextmanager
def _building(folder: Path) -> Iterator[None]:
    """An exclusive lock on `folder`'s lock file beside it, held while it is built (two workers
    serving one file would otherwise both build it, and an own-blocks build removes its Q8_0
    rewrite, which the other may be reading)."""
    try:
        import fcntl
    except ImportError:  # not a Unix: both build, and the first rename wins
        yield
        return
    handle = os.open(lock_file(folder), os.O_RDONLY | os.O_CREAT, 0o666)  # read-only: any user's
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)  # and with it the lock


def lock_file(folder: Path) -> Path:
    """The file whose lock guards the building of `folder`."""
    return folder.with_name(f".{folder.name}.lock")


def _build(folder: Path, build: Callable[[Path], object]) -> None:
    """Build into a scratch folder beside `folder` and rename it into place."""
    xml = folder / IR_NAME
    scratch = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        build(scratch)
        scratch.chmod(0o755)  # mkdtemp's 0700 would keep other users from the shared cache
        try:
            os.rename(scratch, folder)
        except OSError:  # another process put it in place first
            if not xml.is_file():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def save_ir(weights: Path, scratch: Path) -> None:
    """GenAI's IR of `weights` (a GGUF file it decodes exactly) saved into the folder `scratch`;
    the file's mapped pages are given back as GenAI reads them.

    GenAI is handed an empty tokenizer (one read from an empty folder): given none, it converts
    the file's own, which it reads whole a second time, though only the model is kept. On
    Qwen2.5-Coder-1.5B's Q4_0 frame on a 2-core Zen 3 that took the read from 15.7 to 7.7 s and
    its peak RSS from 2,437 to 1,699 MiB, the IR byte for byte the same."""
    import openvino_genai as genai

    link = scratch / weights.name
    os.symlink(weights.resolve(), link)
    no_tokenizer = scratch / "no-tokenizer"
    no_tokenizer.mkdir()
    scheduler = genai.SchedulerConfig()
    scheduler.cache_size = 1
    started = time.perf_counter()
    log.info("building the OpenVINO IR of %s (once)", weights)
    with releasing(weights):
        pipeline = genai.ContinuousBatchingPipeline(
            str(link), genai.Tokenizer(str(no_tokenizer)), scheduler, "CPU", enable_save_ov_model=True
        )
        del pipeline
    link.unlink()
    no_tokenizer.rmdir()
    if not (scratch / IR_NAME).is_file():
        raise RuntimeError(f"OpenVINO GenAI saved no IR for {weights} in {scratch}")
    log.info("OpenVINO IR of %s built in %.1f s", weights, time.perf_counter() - started)
