"""The on-disk cache of corpus embeddings.

The corpus is embedded once per (corpus content hash, embedder id, text recipe): the
vectors go to ``<cache>/embeddings/<key>.items.npy`` (with the category-name vectors
and, for lexical embedders, the learnt vocabulary beside it) and a ``<key>.json``
manifest written last, so a crash never leaves a half entry that looks whole. Every file
is written to a temporary name and renamed. A later run loads the matrix memory-mapped
after checking the manifest (same key parts, shapes, sizes and SHA-256 of every file);
anything that does not match is logged as corrupt or stale and rebuilt. A build in
progress keeps its finished chunks (:class:`ChunkStore`) so that it can resume.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from llmpopcorn.core.cache import atomic_write
from llmpopcorn.corpus.table import file_sha256

if TYPE_CHECKING:  # pragma: no cover
    pass

log = logging.getLogger(__name__)


#: bump when the cache layout changes: older entries are then never read
CACHE_FORMAT = 1
#: how a video becomes text (corpus.item_text): part of the cache key
TEXT_RECIPE = "title+cover_desc+caption_en,skip-copies,join='. ',v1"


@dataclass
class CacheEntry:
    items: np.ndarray  # (n, d) float32, memory-mapped when loaded from disk
    categories: np.ndarray  # (c, d) float32
    category_names: list[str]
    state: dict[str, np.ndarray] = field(default_factory=dict)
    key: str = ""
    hit: bool = False
    seconds: float = 0.0
    #: rows taken from the shipped predictor's memory / from an interrupted build
    reused: int = 0
    resumed: int = 0


def cache_key(corpus_sha256: str, embedder_id: str, recipe: str = TEXT_RECIPE) -> str:
    text = json.dumps([CACHE_FORMAT, corpus_sha256, embedder_id, recipe])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class EmbeddingCache:
    """On-disk cache of corpus embeddings under ``<root>/embeddings``."""

    def __init__(self, root: str | Path):
        self.dir = Path(root).expanduser() / "embeddings"

    def paths(self, key: str) -> dict[str, Path]:
        return {
            "manifest": self.dir / f"{key}.json",
            "items": self.dir / f"{key}.items.npy",
            "categories": self.dir / f"{key}.categories.npy",
            "state": self.dir / f"{key}.state.npz",
            "lock": self.dir / f"{key}.lock",
            "chunks": self.dir / f"{key}.chunks",
        }

    def writable(self) -> bool:
        """Whether the cache folder exists or can be made; if not, say so once."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            log.warning(
                "cannot create the embedding cache %s (%s): running uncached",
                self.dir,
                exc.strerror or exc,
            )
            return False
        return True

    def save_or_warn(self, key: str, entry: CacheEntry, expect: dict[str, Any]) -> bool:
        """:meth:`save`, but a failed write (a full disk, a read-only folder) is a
        warning and leaves no partial entry: the run goes on with the vectors in memory."""
        try:
            self.save(key, entry, expect)
        except OSError as exc:
            self.paths(key)["manifest"].unlink(missing_ok=True)
            log.warning(
                "cannot save the embedding cache in %s (%s): running uncached; free some "
                "space or set cache_dir to keep the embeddings for the next run",
                self.dir,
                exc.strerror or exc,
            )
            return False
        return True

    def load(self, key: str, expect: dict[str, Any]) -> CacheEntry | None:
        """The entry for ``key`` if it is whole and matches ``expect``; else None
        (a missing entry silently, a corrupt or stale one with a warning)."""
        paths = self.paths(key)
        if not paths["manifest"].exists():
            return None
        try:
            entry = self._read(key, paths, expect)
        except Exception as exc:  # noqa: BLE001 - whatever is wrong, the entry is rebuilt
            log.warning(
                "embedding cache %s is corrupt or stale (%s: %s): rebuilding it",
                key,
                type(exc).__name__,
                exc,
            )
            return None
        return entry

    def _read(self, key: str, paths: dict[str, Path], expect: dict[str, Any]) -> CacheEntry:
        manifest = json.loads(paths["manifest"].read_text("utf-8"))
        if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
            raise ValueError(f"the manifest is a {type(manifest).__name__} of the wrong shape")
        for name, value in expect.items():
            if manifest.get(name) != value:
                raise ValueError(f"{name} is {manifest.get(name)!r}, expected {value!r}")
        for name, info in manifest["files"].items():
            if name not in paths or not isinstance(info, dict):
                raise ValueError(f"the manifest lists an unknown file {name!r}")
            path = paths[name]
            if path.stat().st_size != info["bytes"]:
                raise ValueError(
                    f"{path.name} has {path.stat().st_size} bytes, expected {info['bytes']}"
                )
            if file_sha256(path) != info["sha256"]:
                raise ValueError(f"{path.name} does not match its checksum")
        items = np.load(paths["items"], mmap_mode="r", allow_pickle=False)
        categories = np.load(paths["categories"], allow_pickle=False)
        shape = tuple(manifest["items_shape"])
        if items.shape != shape or items.dtype != np.float32:
            raise ValueError(f"items are {items.shape} {items.dtype}, expected {shape} float32")
        if categories.shape != (len(manifest["category_names"]), shape[1]):
            raise ValueError(f"category vectors are {categories.shape}")
        state: dict[str, np.ndarray] = {}
        if "state" in manifest["files"]:
            with np.load(paths["state"], allow_pickle=False) as npz:
                state = {k: npz[k] for k in npz.files}
        return CacheEntry(
            items=items,
            categories=categories.astype(np.float32, copy=False),
            category_names=list(manifest["category_names"]),
            state=state,
            key=key,
            hit=True,
        )

    def save(self, key: str, entry: CacheEntry, expect: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        paths = self.paths(key)
        files: dict[str, dict[str, Any]] = {}
        writes: list[tuple[str, Any]] = [
            ("items", lambda fh: np.save(fh, np.ascontiguousarray(entry.items, dtype=np.float32))),
            (
                "categories",
                lambda fh: np.save(fh, np.ascontiguousarray(entry.categories, dtype=np.float32)),
            ),
        ]
        if entry.state:
            writes.append(("state", lambda fh: np.savez(fh, **entry.state)))
        for name, write in writes:
            atomic_write(paths[name], write)
            files[name] = {"bytes": paths[name].stat().st_size, "sha256": file_sha256(paths[name])}
        manifest = {
            **expect,
            "items_shape": list(entry.items.shape),
            "category_names": entry.category_names,
            "files": files,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "build_seconds": round(entry.seconds, 3),
            "reused_from_predictor": entry.reused,
        }
        # the manifest goes last: it is what makes the entry visible
        atomic_write(
            paths["manifest"], lambda fh: fh.write(json.dumps(manifest, indent=2).encode())
        )


#: corpus rows per chunk file of a build in progress (an interrupted build loses at
#: most one chunk: about two seconds of embedding)
CHUNK_ROWS = 512


class ChunkStore:
    """The finished chunks of a build in progress: ``<dir>/<first row>.npy``, one
    (rows, d) float32 array per :data:`CHUNK_ROWS` corpus rows, each written
    atomically. A chunk that does not load whole is embedded again."""

    def __init__(self, root: Path):
        self.dir = root
        self.writable = True

    def path(self, start: int) -> Path:
        return self.dir / f"{start:09d}.npy"

    def load(self, start: int, rows: int) -> np.ndarray | None:
        path = self.path(start)
        if not path.exists():
            return None
        try:
            array = np.load(path, allow_pickle=False)
            if array.dtype != np.float32 or array.ndim != 2 or array.shape[0] != rows:
                raise ValueError(f"shape {array.shape} {array.dtype}")
            if not np.isfinite(array).all():
                raise ValueError("non-finite values")
        except Exception as exc:  # noqa: BLE001 - a damaged chunk is simply redone
            log.warning("embedding chunk %s is damaged (%s): embedding it again", path.name, exc)
            return None
        return array

    def save(self, start: int, array: np.ndarray) -> None:
        if not self.writable:
            return
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path(start), lambda fh: np.save(fh, array))
        except OSError as exc:
            self.writable = False
            log.warning(
                "cannot write embedding chunks to %s (%s): the build goes on in memory "
                "and cannot resume if interrupted",
                self.dir,
                exc.strerror or exc,
            )

    def remove(self) -> None:
        for path in self.dir.glob("*.npy"):
            path.unlink(missing_ok=True)
        with suppress(OSError):
            self.dir.rmdir()
