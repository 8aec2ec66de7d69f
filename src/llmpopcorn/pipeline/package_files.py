"""What a package may be built from: the run's record and its media, each checked.

A package leaves the machine (a creator uploads it; the studio serves it), so it is built
only from **regular files inside the run folder**: an artifact path from ``record.json``
that is absolute, holds ``..``, or passes through a symbolic link is refused, and so is
anything that is not a regular file. Each file is then opened for what it claims to be
(the cover as an image, the clip as a video whose every frame decodes), so a damaged or
truncated clip is an error, not a broken upload. Every failure is a :class:`DataError`
with a hint (the studio answers it as JSON, never a 500).
"""

from __future__ import annotations

import stat
from pathlib import Path, PurePosixPath, PureWindowsPath

from llmpopcorn.core.errors import DataError
from llmpopcorn.core.types import Artifact, RunRecord

#: the largest cover opened (a 4096x4096 picture; the draft cover is 1080x1920)
MAX_COVER_PIXELS = 4096 * 4096
#: frames decoded at most to check a clip (a 3 s clip has 72; a long one is cut here)
MAX_CHECKED_FRAMES = 3600
_REDO = "make the run again (popcorn make, or Retry in the studio)"


def read_record(run_dir: Path) -> RunRecord:
    """The run's record; a missing or unreadable ``record.json`` is a :class:`DataError`."""
    from pydantic import ValidationError

    path = Path(run_dir) / "record.json"
    try:
        if path.is_symlink() or not path.is_file():
            raise DataError("the run has no record.json", _REDO)
        return RunRecord.model_validate_json(path.read_bytes())
    except (ValidationError, ValueError, UnicodeDecodeError):
        raise DataError(
            "the run's record.json is damaged (not a valid run record)",
            f"the run folder was changed or cut short; {_REDO}",
        ) from None
    except OSError as exc:
        raise DataError(f"the run's record.json cannot be read: {exc.strerror}", _REDO) from None


def artifact_file(run_dir: Path, artifact: Artifact) -> Path:
    """The artifact's file: a regular file inside ``run_dir``, reached without a symbolic
    link, named by a relative path without ``..``."""
    name = artifact.path
    parts = PurePosixPath(name).parts
    if (
        not name
        or PurePosixPath(name).is_absolute()
        or PureWindowsPath(name).is_absolute()
        or "\\" in name
        or any(part in ("..", ".") for part in parts)
    ):
        raise DataError(
            f"the record names a {artifact.kind} outside the run folder ({_shown(name)})",
            f"record.json was edited; {_REDO}",
        )
    root = Path(run_dir)
    path = root
    try:
        if root.is_symlink():
            raise DataError("the run folder is a symbolic link", "package the folder itself")
        for part in parts:
            path = path / part
            if path.is_symlink():
                raise DataError(
                    f"the run's {artifact.kind} ({_shown(name)}) is a symbolic link; only "
                    "files inside the run folder are packaged",
                    f"replace the link with the file itself, or {_REDO}",
                )
        mode = path.lstat().st_mode
    except FileNotFoundError:
        raise DataError(
            f"the run's {artifact.kind} file is missing ({_shown(name)})", _REDO
        ) from None
    if not stat.S_ISREG(mode):
        raise DataError(f"the run's {artifact.kind} ({_shown(name)}) is not a regular file", _REDO)
    if not path.resolve().is_relative_to(root.resolve()):  # pragma: no cover - links refused
        raise DataError(f"the run's {artifact.kind} is outside the run folder", _REDO)
    return path


def check_cover(path: Path) -> None:
    """``path`` opens as a picture of a sane size and its pixels decode."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if image.width * image.height > MAX_COVER_PIXELS:
                    raise DataError(
                        f"the run's cover is {image.width}x{image.height}, too large to package",
                        _REDO,
                    )
                image.load()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        raise DataError("the run's cover is not a readable image", _REDO) from None


def check_clip(path: Path) -> None:
    """``path`` opens as a video and every frame (up to :data:`MAX_CHECKED_FRAMES`) decodes;
    fewer frames than the container declares is a truncated clip."""
    import av

    decoded = 0
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DataError("the run's clip has no video stream", _REDO)
            stream = container.streams.video[0]
            declared = stream.frames
            for _frame in container.decode(stream):
                decoded += 1
                if decoded >= MAX_CHECKED_FRAMES:
                    return
    except av.error.FFmpegError:
        raise DataError(
            "the run's clip is not a readable video (damaged or cut short)", _REDO
        ) from None
    if decoded == 0:
        raise DataError("the run's clip holds no frame", _REDO)
    if declared and decoded < declared:
        raise DataError(
            f"the run's clip is cut short: {decoded} of its {declared} frames decode", _REDO
        )


def checked_media(run_dir: Path, artifact: Artifact) -> Path:
    """The cover's or clip's file, checked as above."""
    path = artifact_file(run_dir, artifact)
    if artifact.kind == "cover":
        check_cover(path)
    elif artifact.kind == "clip":
        check_clip(path)
    return path


def _shown(name: str) -> str:
    return name if len(name) <= 80 else name[:77] + "..."
