"""The import layers of docs/architecture.md: the import-linter contracts in pyproject.toml hold,
and no import cycle runs through aios_serve's modules.

Every import counts: those at the top of a module, those inside functions, and those under
`TYPE_CHECKING` (a cycle that only the type checker follows still ties the modules together;
pyproject's `[tool.importlinter]` counts them too)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[2]


def test_import_linter_contracts_hold() -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    assert lint_imports.exists(), f"{lint_imports} is missing: install the `test` extra (import-linter)"
    result = subprocess.run(
        [str(lint_imports), "--config", str(ROOT / "pyproject.toml"), "--no-cache", "--no-logo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def import_cycles(graph: grimp.ImportGraph) -> list[tuple[str, ...]]:
    """One cycle per import that closes one: the import, then the shortest way back."""
    cycles = []
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back is not None:
                cycles.append((importer, *back))
    return cycles


def test_no_import_cycle() -> None:
    graph = grimp.build_graph("aios_serve", cache_dir=None, exclude_type_checking_imports=False)
    cycles = import_cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_a_cycle_is_found() -> None:
    """The check itself: an import back from a leaf to its importer closes a cycle."""
    graph = grimp.build_graph("aios_serve", cache_dir=None)
    graph.add_import(importer="aios_serve.backends.protocols.generation", imported="aios_serve.registry")
    assert any(cycle[0] == "aios_serve.registry" for cycle in import_cycles(graph))
