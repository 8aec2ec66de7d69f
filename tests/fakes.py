"""Fakes shared by the tests: a checkable predictor and pipelines on small draft renderers."""

from __future__ import annotations

from llmpopcorn.backends.image.draft import DraftCover
from llmpopcorn.backends.video.draft import DraftClip
from llmpopcorn.core.types import Score
from llmpopcorn.pipeline.core import Pipeline


class TitleLengthScorer:
    """A fake predictor: log2 comments = title length / 10 (deterministic, checkable)."""

    name = "title-length"

    def __init__(self):
        self.calls = 0

    def score(self, idea, *, query=None, clip_path=None, category=""):
        self.calls += 1
        value = len(idea.title) / 10
        return Score(predictor=self.name, log2_comments=value, expected_comments=2**value)


def draft_pipeline(settings, *, size=(72, 128), fps=4, **given) -> Pipeline:
    """A Pipeline whose renderers are the real draft backends at a small size."""
    width, height = size
    return Pipeline(
        settings,
        image=DraftCover(width=width, height=height),
        video=DraftClip(width=width, height=height, fps=fps),
        **given,
    )
