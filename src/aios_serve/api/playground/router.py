"""`/` and `/playground` serve the playground page; its JS and CSS come from the package."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from starlette.responses import FileResponse
from starlette.staticfiles import StaticFiles

PLAYGROUND_DIR = Path(__file__).resolve().parents[2] / "static" / "playground"
PLAYGROUND_ASSETS_PATH = "/playground/assets"
# Everything the page loads or calls is on this server; no inline script or style markup.
PLAYGROUND_CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'none'"
)

router = APIRouter(include_in_schema=False)
router.mount(PLAYGROUND_ASSETS_PATH, StaticFiles(directory=PLAYGROUND_DIR), name="playground-assets")


@router.get("/")
@router.get("/playground")
async def playground() -> FileResponse:
    """The single-page playground; it calls the API from the browser with the user's key."""
    return FileResponse(
        PLAYGROUND_DIR / "index.html",
        media_type="text/html",
        headers={"Content-Security-Policy": PLAYGROUND_CONTENT_SECURITY_POLICY},
    )
