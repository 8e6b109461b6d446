"""Files the package must ship (the pages that use them, served: tests/e2e/test_playground.py)."""

from __future__ import annotations

from pathlib import Path


def test_playground_files_ship_in_the_package() -> None:
    import aios_serve.api.playground.router as playground

    shipped = {path.name for path in Path(playground.PLAYGROUND_DIR).iterdir()}
    assert {"index.html", "playground.js", "playground.css"} <= shipped
