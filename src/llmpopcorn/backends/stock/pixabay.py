"""Pixabay (https://pixabay.com/api/docs/): free photos and videos, a free API key.

The key is the ``key`` query parameter, sent to the configured API origin only. Photos:
``GET /api/?q=...&image_type=photo&orientation=vertical``; videos: ``GET /api/videos/``
(no orientation filter: vertical ones are preferred among the results). Pixabay asks to
show where the media come from; the run keeps the credit.
"""

from __future__ import annotations

from typing import Any

from llmpopcorn.backends.stock.base import Found, StockBackend, StockClip, StockCover

#: Pixabay refuses queries over 100 characters
MAX_QUERY = 100


class PixabayBackend(StockBackend):
    provider = "pixabay"
    source = "Pixabay"
    licence_url = "https://pixabay.com/service/license-summary/"
    default_base_url = "https://pixabay.com"
    key_page = "https://pixabay.com/api/docs/"
    key_envs = ("POPCORN_PIXABAY_API_KEY", "PIXABAY_API_KEY")

    def auth_params(self) -> dict[str, str]:
        return {"key": self._api_key or ""}  # on the API origin only (the outbound policy)

    def search(self, media: str, query: str) -> list[Found]:
        params: dict[str, Any] = {
            "q": query[:MAX_QUERY],
            "per_page": self.opts.per_page,
            "safesearch": "true",
        }
        if media == "photo":
            params.update(image_type="photo", orientation="vertical")
        path = "/api/" if media == "photo" else "/api/videos/"
        # as params, not in the URL: the policy adds the key to them (on the API origin only)
        answer = self.send("GET", f"{self.api_base()}{path}", params=params).json()
        hits = [h for h in answer.get("hits") or [] if isinstance(h, dict)]
        return [_photo(h) if media == "photo" else _video(h) for h in hits]


def _found(item: dict[str, Any], **extra: Any) -> Found:
    user = str(item.get("user") or "unknown")
    user_id = item.get("user_id")
    return Found(
        id=str(item.get("id", "")),
        page_url=str(item.get("pageURL") or ""),
        author=user,
        author_url=f"https://pixabay.com/users/{user}-{user_id}/" if user_id else "",
        **extra,
    )


def _photo(item: dict[str, Any]) -> Found:
    width, height = int(item.get("imageWidth") or 0), int(item.get("imageHeight") or 0)
    url = item.get("largeImageURL") or item.get("webformatURL")
    scale = min(1.0, 1280 / max(width, height, 1))  # largeImageURL is at most 1280 px
    files = [(str(url), int(width * scale), int(height * scale))] if url else []
    return _found(item, width=width, height=height, files=files)


def _video(item: dict[str, Any]) -> Found:
    versions = item.get("videos") or {}
    files = [
        (str(v["url"]), int(v.get("width") or 0), int(v.get("height") or 0))
        for v in versions.values()
        if isinstance(v, dict) and v.get("url")
    ]
    biggest = max(files, key=lambda f: f[1] * f[2], default=("", 0, 0))
    return _found(
        item,
        width=biggest[1],
        height=biggest[2],
        seconds=float(item.get("duration") or 0),
        files=files,
    )


class PixabayCover(PixabayBackend, StockCover):
    name = "pixabay"
    description = "a Pixabay stock photo found by the idea's keywords, title on top (free key)"


class PixabayClip(PixabayBackend, StockClip):
    name = "pixabay"
    description = "a Pixabay stock video found by the idea's keywords, 3 s, 9:16 (free key)"
