"""What the stock-footage backends share.

A search runs on the idea's ``keywords`` (what the video shows, written by the LLM or the
offline stand-in): all of them together first, then each alone; with none, the topics of
the title. Vertical results come first (the providers are asked for portrait ones, and
wider results are kept only when no vertical one exists); among the first few the seed
picks one, so "another take" can bring another clip. Every request goes through the
project's outbound policy (:mod:`llmpopcorn.backends.outbound`, via
:class:`~llmpopcorn.backends.hosted.base.HostedBackend`): the key only to the configured
API origin, never to a file host, a byte cap, a deadline, public addresses only.

The cover is the photo, cropped to 9:16 and scaled to 1080x1920, with the title on a dark
band like the draft cover (:func:`llmpopcorn.backends.image.draft.title_card`). The clip
is the video's first 3 s, cropped to 9:16 and scaled to 540x960 with PyAV, at most 30 fps,
with the title fading in like the draft clip's
(:func:`llmpopcorn.backends.video.draft.overlay_title`). Both carry a ``credit`` (provider,
author, page, licence URL) that the run record, the report, the studio and the package
show: the providers ask for attribution.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from llmpopcorn.backends.base import Clip, ImageBackend, VideoBackend
from llmpopcorn.backends.hosted.base import HostedBackend, HostedError, HostedOptions

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from llmpopcorn.backends.base import ImageRequest, VideoRequest

COVER_SIZE = (1080, 1920)
CLIP_SIZE = (540, 960)
MAX_FPS = 30.0
#: how many of the best results the seed chooses among
CHOICES = 5


class StockOptions(HostedOptions):
    """``--image-opt`` / ``--video-opt`` of a stock backend. A request may set none of
    them: the base URL, timeouts and caps are server configuration."""

    request_safe: ClassVar[frozenset[str]] = frozenset()

    timeout: float = Field(120.0, gt=0, le=3600, description="seconds for the whole search")
    request_timeout: float = Field(30.0, gt=0, le=600, description="seconds for one search")
    download_timeout: float = Field(
        120.0, gt=0, le=3600, description="seconds for one file download (within timeout)"
    )
    max_download_mb: float = Field(100.0, gt=0, le=2048, description="largest file accepted (MiB)")
    per_page: int = Field(15, ge=3, le=80, description="results asked for per search")


@dataclass
class Found:
    """One search result: a photo or a video, its files and who made it."""

    id: str
    page_url: str
    author: str
    author_url: str = ""
    width: int = 0
    height: int = 0
    seconds: float = 0.0
    #: (url, width, height) of the files on offer
    files: list[tuple[str, int, int]] = field(default_factory=list)

    @property
    def vertical(self) -> bool:
        return self.height > self.width > 0


class StockBackend(HostedBackend):
    """The shared search / download / credit; a provider sets the class variables and
    implements :meth:`search`."""

    options_model: ClassVar[type[HostedOptions]] = StockOptions
    #: the provider's name in credits ("Pexels")
    source: ClassVar[str] = ""
    licence_url: ClassVar[str] = ""
    default_base_url: ClassVar[str] = ""
    #: where a free key is had (said when none is set)
    key_page: ClassVar[str] = ""
    cost_note = "free key"

    def search(self, media: str, query: str) -> list[Found]:  # pragma: no cover - providers
        """Results for ``query``; ``media`` is "photo" or "video"."""
        raise NotImplementedError

    # -- HostedBackend's hooks ---------------------------------------------------------

    def api_base(self) -> str:
        return (self.opts.base_url or self.default_base_url).rstrip("/")

    def estimate(self) -> float | None:
        return 0.0  # free: the key's rate limit is the only cost

    @classmethod
    def key_hint(cls) -> str:
        return f"set {' or '.join(cls.key_envs)} to a free {cls.source} API key ({cls.key_page})"

    # -- searching ---------------------------------------------------------------------

    def find(self, media: str, keywords: list[str], title: str, seed: int) -> Found:
        """The result to use: the first query with results, vertical ones first, the
        seed's pick among the best :data:`CHOICES`."""
        from llmpopcorn.backends.llm.compose import topical_phrases

        self.begin_job()
        terms = [k for k in keywords if k.strip()] or topical_phrases(title)[:3]
        if not terms:
            raise HostedError(
                f"nothing to search {self.source} for: the idea has no keywords or title",
                "use an LLM (or the offline stand-in) that writes keywords",
            )
        queries = list(dict.fromkeys([" ".join(terms[:2]), *terms]))
        for query in queries:
            found = [f for f in self.search(media, query) if f.files]
            if not found:
                continue
            vertical = [f for f in found if f.vertical] or found
            chosen = vertical[seed % min(CHOICES, len(vertical))]
            self.last = {"query": query, "results": len(found), "id": chosen.id}
            return chosen
        raise HostedError(
            f"{self.source} has no {media} for {', '.join(repr(q) for q in queries)}",
            "try another query or keywords, or another --image/--video backend",
        )

    def credit(self, found: Found, what: str) -> dict[str, Any]:
        return {
            "what": what,
            "source": self.source,
            "id": found.id,
            "author": found.author,
            "author_url": found.author_url,
            "url": found.page_url,
            "licence_url": self.licence_url,
            "query": self.last.get("query"),
        }

    def fetch(self, url: str) -> bytes:
        """A file from the provider's file host: never with the key."""
        return self.download(url, auth=False)

    def options(self) -> dict[str, Any]:
        data = super().options()
        for name in ("estimated_cost_usd", "spent_usd_estimate", "price", "model"):
            data.pop(name, None)
        return data

    def model_id(self) -> str | None:
        return f"{self.source} search"


def smallest_at_least(files: list[tuple[str, int, int]], width: int, height: int) -> str:
    """The smallest file at least ``width`` x ``height`` (the largest when none is)."""
    big = [f for f in files if f[1] >= width and f[2] >= height]
    if big:
        return min(big, key=lambda f: f[1] * f[2])[0]
    return max(files, key=lambda f: f[1] * f[2])[0]


class StockCover(StockBackend, ImageBackend):
    """A stock photo as the cover."""

    def generate(self, request: ImageRequest) -> Image.Image:
        from llmpopcorn.backends.hosted.files import open_image, to_cover
        from llmpopcorn.backends.image.draft import title_card

        found = self.find("photo", request.keywords, request.title, request.seed)
        size = (request.width or COVER_SIZE[0], request.height or COVER_SIZE[1])
        data = self.fetch(smallest_at_least(found.files, *size))
        picture = to_cover(open_image(data, f"the {self.source} photo {found.id}"))
        from PIL import Image

        picture = picture.resize(size, Image.Resampling.LANCZOS)
        if request.title:
            picture = title_card(picture, request.title, band=(0.66, 0.9))
        picture.info["credit"] = self.credit(found, "cover")
        return picture


class StockClip(StockBackend, VideoBackend):
    """A stock video as the clip: its first 3 s."""

    def generate(self, request: VideoRequest) -> Clip:
        from llmpopcorn.backends.hosted.files import decode_mp4
        from llmpopcorn.backends.video.draft import overlay_title

        found = self.find("video", request.keywords, request.title, request.seed)
        size = (request.width or CLIP_SIZE[0], request.height or CLIP_SIZE[1])
        data = self.fetch(smallest_at_least(found.files, *size))
        frames, fps, info = decode_mp4(
            data,
            seconds=request.seconds,
            what=f"the {self.source} video {found.id}",
            size=size,
            max_fps=MAX_FPS,
        )
        frames = overlay_title(frames, request.title)
        meta = {**info, "credit": self.credit(found, "clip")}
        return Clip(frames=frames, fps=fps, meta=meta)
