"""Pexels (https://www.pexels.com/api/): free photos and videos, a free API key.

The key goes in the ``Authorization`` header, to the configured API origin only. Photos:
``GET /v1/search``; videos: ``GET /videos/search`` (Pexels' video endpoints have their own
path). Both are asked for ``orientation=portrait``. Pexels' guidelines ask for a credit
("Video by NAME on Pexels", with a link), which the run keeps.
"""

from __future__ import annotations

from typing import Any

from llmpopcorn.backends.stock.base import Found, StockBackend, StockClip, StockCover


class PexelsBackend(StockBackend):
    provider = "pexels"
    source = "Pexels"
    licence_url = "https://www.pexels.com/license/"
    default_base_url = "https://api.pexels.com"
    key_page = "https://www.pexels.com/api/new/"
    key_envs = ("POPCORN_PEXELS_API_KEY", "PEXELS_API_KEY")

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": self._api_key or ""}

    def search(self, media: str, query: str) -> list[Found]:
        path = "/v1/search" if media == "photo" else "/videos/search"
        params = {"query": query, "orientation": "portrait", "per_page": self.opts.per_page}
        # as params, not in the URL: the policy adds the key to them (on the API origin only)
        answer = self.send("GET", f"{self.api_base()}{path}", params=params).json()
        if media == "photo":
            return [_photo(p) for p in answer.get("photos") or [] if isinstance(p, dict)]
        return [_video(v) for v in answer.get("videos") or [] if isinstance(v, dict)]


def _photo(item: dict[str, Any]) -> Found:
    width, height = int(item.get("width") or 0), int(item.get("height") or 0)
    src = item.get("src") or {}
    files = []
    if src.get("original"):
        files.append((str(src["original"]), width, height))
    if src.get("portrait"):  # Pexels' own 800x1200 crop
        files.append((str(src["portrait"]), 800, 1200))
    return Found(
        id=str(item.get("id", "")),
        page_url=str(item.get("url") or ""),
        author=str(item.get("photographer") or "unknown"),
        author_url=str(item.get("photographer_url") or ""),
        width=width,
        height=height,
        files=files,
    )


def _video(item: dict[str, Any]) -> Found:
    user = item.get("user") or {}
    files = [
        (str(f["link"]), int(f.get("width") or 0), int(f.get("height") or 0))
        for f in item.get("video_files") or []
        if isinstance(f, dict) and f.get("link") and f.get("file_type") == "video/mp4"
    ]
    return Found(
        id=str(item.get("id", "")),
        page_url=str(item.get("url") or ""),
        author=str(user.get("name") or "unknown"),
        author_url=str(user.get("url") or ""),
        width=int(item.get("width") or 0),
        height=int(item.get("height") or 0),
        seconds=float(item.get("duration") or 0),
        files=files,
    )


class PexelsCover(PexelsBackend, StockCover):
    name = "pexels"
    description = "a Pexels stock photo found by the idea's keywords, title on top (free key)"


class PexelsClip(PexelsBackend, StockClip):
    name = "pexels"
    description = "a Pexels stock video found by the idea's keywords, 3 s, 9:16 (free key)"
