"""Small abstract bases, one main method each.

A backend class has a registry ``name``, a one-line ``description``, a
``from_settings`` constructor and an ``availability`` check that says, without
loading weights, whether it can run here and, if not, why.
"""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from llmpopcorn.core.types import BackendUse, ChatRequest, Completion, Message

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    from PIL import Image

    from llmpopcorn.core.settings import Settings


@dataclass(frozen=True)
class Availability:
    ok: bool
    reason: str = ""
    #: the server the backend needs running (a URL), when it needs one: configured is not
    #: reachable (`popcorn backends --check` probes it)
    server: str = ""

    @classmethod
    def needs_modules(cls, extra: str, *modules: str) -> Availability:
        """Available when every module can be imported; otherwise name the extra."""
        missing = [m for m in modules if importlib.util.find_spec(m) is None]
        if missing:
            return cls(False, f"missing {', '.join(missing)}: pip install 'llmpopcorn[{extra}]'")
        return cls(True)


class Backend(ABC):  # noqa: B024 - subclasses add the abstract method
    kind: ClassVar[str] = ""
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    #: renderers: the pydantic model of their ``--image-opt`` / ``--video-opt`` options
    #: (:mod:`llmpopcorn.backends.options`); None: the backend takes none
    options_model: ClassVar[type | None] = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Backend:
        return cls()

    @classmethod
    def availability(cls, settings: Settings | None = None) -> Availability:
        return Availability(True)

    @classmethod
    def probe(cls, settings: Settings | None, timeout: float) -> Availability | None:
        """Whether the server :meth:`availability` names answers, within ``timeout``
        seconds (None: nothing to probe). Only asked for by `popcorn backends --check`."""
        return None

    def options(self) -> dict[str, Any]:
        """Options worth recording (never secrets)."""
        return {}

    def model_id(self) -> str | None:
        return None

    def describe(self) -> BackendUse:
        return BackendUse(
            name=self.name, kind=self.kind, model=self.model_id(), options=self.options()
        )


class LLM(Backend):
    kind = "llm"
    #: False for stand-ins that are not language models (the offline composer)
    is_llm: ClassVar[bool] = True
    #: whether a run request (studio, MCP) may name the model: only where the model is a
    #: name at a remote API, never where it is a path on the server
    request_model: ClassVar[bool] = False
    #: whether the backend runs a model on this machine (CPU or GPU), so the studio runs
    #: its jobs in the one-at-a-time device lane, never beside another model
    holds_device: ClassVar[bool] = False

    @abstractmethod
    def complete(self, request: ChatRequest) -> Completion | str:
        """The assistant's reply to ``request.messages``: a :class:`Completion` (text, why
        it ended, token counts, how its form was obtained) or, from a simple backend, the
        text alone."""

    def count_tokens(self, messages: list[Message]) -> int | None:
        """Tokens ``messages`` take as this model's prompt (None: unknown here)."""
        return None

    def context_window(self) -> int | None:
        """Tokens the model reads at once, prompt and reply (None: unknown here)."""
        return None

    def describe(self) -> BackendUse:
        use = super().describe()
        use.is_llm = self.is_llm
        return use


@dataclass
class ImageRequest:
    prompt: str
    title: str = ""
    seed: int = 42
    width: int | None = None  # None: the backend's default 9:16 size
    height: int | None = None
    negative_prompt: str | None = None
    #: search terms for stock renderers (the idea's keywords); generators ignore them
    keywords: list[str] = field(default_factory=list)


@dataclass
class VideoRequest:
    prompt: str
    title: str = ""
    seed: int = 42
    seconds: float = 3.0
    width: int | None = None
    height: int | None = None
    negative_prompt: str | None = None
    cover: Image.Image | None = None  # for image-to-video backends
    keywords: list[str] = field(default_factory=list)  # as ImageRequest.keywords


@dataclass
class Clip:
    """Frames and their frame rate. A frame is an RGB array (H x W x 3 uint8) or a
    :class:`llmpopcorn.backends.media.YUVFrame` (already in the encoder's yuv420p, as the draft
    renderer makes them; ``np.asarray(frame)`` gives its RGB, ``.shape`` is H x W x 3)."""

    frames: list[np.ndarray]
    fps: float
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return len(self.frames) / self.fps


class ImageBackend(Backend):
    kind = "image"

    @abstractmethod
    def generate(self, request: ImageRequest) -> Image.Image:
        """Render a cover image."""


class VideoBackend(Backend):
    kind = "video"

    @abstractmethod
    def generate(self, request: VideoRequest) -> Clip:
        """Render a clip of ``request.seconds`` seconds."""


class Embedder(Backend):
    """Texts to L2-normalised vectors.

    Pretrained models ignore :meth:`fit`. Lexical embedders learn a vocabulary from
    the corpus in :meth:`fit` and hand it to the embedding cache as arrays
    (:meth:`state` / :meth:`load_state`), so a cached corpus never needs refitting.
    """

    kind = "embedder"

    @property
    @abstractmethod
    def id(self) -> str:
        """A stable identifier of the model and its settings (used in cache keys)."""

    @abstractmethod
    def embed(self, texts: list[str]) -> np.ndarray:
        """Return an (n, d) float32 array of L2-normalised embeddings (zero rows allowed
        for texts the embedder cannot represent, e.g. out-of-vocabulary words)."""

    def fit(self, texts: list[str]) -> Embedder:
        """Learn whatever the embedder needs from the corpus texts; returns self."""
        return self

    def state(self) -> dict[str, np.ndarray]:
        """What :meth:`fit` learnt, as plain arrays (empty for pretrained models)."""
        return {}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`state` returned."""
