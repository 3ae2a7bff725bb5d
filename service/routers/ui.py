"""GET /: the token heatmap page (like Fig. 8 of the TLCR paper); it calls POST /token_rewards."""

from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter(tags=["ui"])


@cache
def heatmap_html() -> str:
    return resources.files("tlcr.service").joinpath("static/heatmap.html").read_text(encoding="utf-8")


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def heatmap() -> HTMLResponse:
    return HTMLResponse(heatmap_html())
