"""The web dashboard: static pages served by the master at ``/`` (no build step, no CDN).

Plotly's JavaScript is served from the installed ``plotly`` Python package, so the dashboard
works with no internet.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse

STATIC = Path(__file__).parent / "static"


def mount_dashboard(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")
