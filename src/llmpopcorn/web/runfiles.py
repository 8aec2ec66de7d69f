"""A web run's files: the run folder inside a job's folder, its summary for the history,
marking its record when it was stopped, and the package zip served for it."""

from __future__ import annotations

import io
import json
import logging
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmpopcorn.core.errors import DataError, PopcornError
from llmpopcorn.core.settings import Settings
from llmpopcorn.core.types import utcnow

log = logging.getLogger(__name__)


def only_run_dir(job_dir: Path) -> Path | None:
    """The run folder Pipeline.make created inside a job's folder (None before it)."""
    try:
        found = [p for p in job_dir.iterdir() if p.is_dir() and not p.is_symlink()]
    except OSError:
        return None
    found = [p for p in found if (p / "record.json").is_file()]
    return sorted(found)[-1] if found else None


def mark_record(run_dir: Path | None, message: str) -> None:
    """Say in the run's own record that it was stopped (when it still says running)."""
    if run_dir is None:
        return
    from llmpopcorn.pipeline.report import load_record, save_record

    try:
        record = load_record(run_dir)
    except (OSError, ValueError):
        return
    if record.status == "running" or record.error != message:
        record.status = "interrupted"
        record.error = message
        record.finished = record.finished or utcnow()
        save_record(record, run_dir)


def summary(run_dir: Path | None) -> dict[str, Any]:
    """What history shows for a run, from its record (empty before there is one)."""
    if run_dir is None:
        return {}
    from llmpopcorn.pipeline.report import load_record

    try:
        record = load_record(run_dir)
    except (OSError, ValueError):
        return {}
    out: dict[str, Any] = {
        "run_id": record.run_id,
        "title": record.idea.title if record.idea else None,
        "timings": record.timings,
        "category": (record.category or {}).get("name"),
        "has_clip": record.artifact("clip") is not None,
    }
    if record.score is not None:
        out["score"] = {
            "log2_comments": record.score.log2_comments,
            "expected_comments": record.score.expected_comments,
            "percentile": record.score.percentile,
            "interval": record.score.interval,
            "calibrated": record.score.extra.get("calibrated"),
        }
    return out


def package_bytes(run_dir: Path, settings: Settings, scrubber: Callable[[Any], Any]) -> bytes:
    """make_package's zip (clip.mp4, cover.png, metadata.json) plus the run's record.json
    with server paths taken out by ``scrubber``. Any failure is a :class:`PopcornError`
    with a hint (a damaged record or file, a link out of the folder), never a crash."""
    from llmpopcorn.pipeline.package_files import read_record

    record = read_record(run_dir)  # damaged: a DataError (the studio answers it as JSON)
    try:
        return _package(run_dir, record, settings, scrubber)
    except PopcornError:
        raise
    except Exception as exc:  # noqa: BLE001 - an unforeseen file problem: an error, not a 500
        log.warning("package of %s failed: %s", run_dir.name, type(exc).__name__)
        raise DataError(
            f"the package could not be built ({type(exc).__name__})",
            "the run's files may be damaged; make the run again (Retry)",
        ) from None


def _package(run_dir: Path, record: Any, settings: Settings, scrubber: Callable) -> bytes:
    from llmpopcorn.core.paths import escape_unsafe_json
    from llmpopcorn.pipeline.package import make_package, signer_from_settings

    zipped = make_package(run_dir, signer=signer_from_settings(settings), record=record)
    record = record.model_dump(mode="json")  # with the package listed (make_package saved it)
    buffer = io.BytesIO()
    with zipfile.ZipFile(zipped) as source, zipfile.ZipFile(buffer, "w") as target:
        for info in source.infolist():
            target.writestr(info, source.read(info.filename))
        text = json.dumps(scrubber(record), indent=2, ensure_ascii=False)
        text = escape_unsafe_json(text) + "\n"  # raw LLM replies: no bidi/invisible chars
        target.writestr("record.json", text)
    return buffer.getvalue()
