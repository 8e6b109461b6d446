"""The own-blocks IR's cache: what a build leaves on disk besides the IR it made."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from aios_serve.backends.openvino_paged import paged_ir
from aios_serve.backends.openvino_paged.ir import IR_NAME, NotBuilt, cached, cached_only, ir_folder
from aios_serve.backends.openvino_paged.weights import NO_ZERO_POINTS_LABEL, OWN_BLOCKS_LABEL
from aios_serve.models.bundled import resolve_bundled


def _plant(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / IR_NAME).write_text("<net/>")
    return folder


def test_a_build_keeps_only_the_ir_it_made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gguf = resolve_bundled("smollm2-135m-instruct")  # before the cache moves: it may be assembled there
    monkeypatch.setenv("AIOS_CACHE_DIR", str(tmp_path))
    current = ir_folder(gguf, OWN_BLOCKS_LABEL)
    older_label = _plant(ir_folder(gguf, "own-blocks-v4"))
    other_version = _plant(older_label.with_name(older_label.name.replace("-ov", "-ov2025.0.0-1")))
    other_route = _plant(ir_folder(gguf, "f16-0123456789abcdef"))
    other_form = _plant(ir_folder(gguf, NO_ZERO_POINTS_LABEL))  # current too: f32 activations' form

    xml, route = paged_ir(gguf)

    assert (route, xml) == ("own-blocks", current / IR_NAME)
    assert xml.is_file() and xml.with_suffix(".bin").stat().st_size > 50 << 20
    assert sorted(path.name for path in current.iterdir()) == [IR_NAME.replace(".xml", ".bin"), IR_NAME]
    assert not older_label.exists()
    assert other_version.exists() and other_route.exists() and other_form.exists()
    left = sorted(path.name for path in (tmp_path / "openvino-ir").iterdir() if path.suffix != ".lock")
    # no frame, no IR of it, no half-written scratch folder
    assert left == sorted([current.name, other_route.name, other_version.name, other_form.name])


def test_a_second_process_waits_for_the_first_ones_build(tmp_path: Path) -> None:
    builds: list[Path] = []

    def build(scratch: Path) -> None:
        builds.append(scratch)
        time.sleep(0.5)  # the other caller arrives meanwhile
        (scratch / IR_NAME).write_text("<net/>")

    folder = tmp_path / "model-0123456789abcdef-ov2026.4.1-1"
    found: list[Path] = []
    callers = [threading.Thread(target=lambda: found.append(cached(folder, build))) for _ in range(2)]
    for caller in callers:
        caller.start()
        time.sleep(0.1)
    for caller in callers:
        caller.join()
    assert found == [folder / IR_NAME] * 2
    assert len(builds) == 1


_FIRST_AND_SECOND_START = """
import json, resource, sys
from pathlib import Path
def own_peak_kib():  # VmHWM: this process since its exec (ru_maxrss counts its parent's before it)
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmHWM"))
    return int(line.split()[1])
from aios_serve.backends.openvino_paged.child_build import prepared_ir
gguf = Path(sys.argv[1])
starts = []
for _ in range(2):
    xml, route = prepared_ir(gguf)
    starts.append({
        "xml": str(xml), "route": route,
        "own_peak_kib": own_peak_kib(),
        "children_peak_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
    })
print(json.dumps({"starts": starts, "genai_loaded": "openvino_genai" in sys.modules}))
"""


def test_a_first_start_builds_in_a_child_process_and_a_second_finds_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gguf = resolve_bundled("smollm2-135m-instruct")
    monkeypatch.setenv("AIOS_CACHE_DIR", str(tmp_path))
    with pytest.raises(NotBuilt), cached_only():
        paged_ir(gguf)
    assert not (tmp_path / "openvino-ir").exists() or not any((tmp_path / "openvino-ir").iterdir())

    run = subprocess.run(
        [sys.executable, "-c", _FIRST_AND_SECOND_START, str(gguf)],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    report = json.loads(run.stdout.strip().splitlines()[-1])
    first, second = report["starts"]
    assert first["xml"] == second["xml"] == str(ir_folder(gguf, OWN_BLOCKS_LABEL) / IR_NAME)
    assert first["route"] == second["route"] == "own-blocks"
    assert not report["genai_loaded"]  # GenAI built the IR in the child
    # the build's peak was the child's (SmolLM2's: 704 MB on Zen 3, this process's ~450 MB), and
    # the second start made no child
    assert first["children_peak_kib"] > first["own_peak_kib"]
    assert second["children_peak_kib"] == first["children_peak_kib"]
    with cached_only():
        assert paged_ir(gguf) == (Path(first["xml"]), "own-blocks")
