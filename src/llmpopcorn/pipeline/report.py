"""Run records (``record.json``) and the self-contained ``report.html``.

Both are scrubbed of secrets (:func:`llmpopcorn.core.redact.scrub`) as they are written,
and every text in the report is HTML-escaped with bidirectional-override and other
invisible control characters removed (:func:`llmpopcorn.core.paths.strip_unsafe`). The
record's JSON keeps the LLM's raw replies verbatim, with those characters written as
``\\uXXXX`` escapes (:func:`llmpopcorn.core.paths.escape_unsafe_json`), so showing the file
or the ``--json`` output cannot reorder a terminal line.
"""

from __future__ import annotations

import base64
import html
import json
import os
import tempfile
from pathlib import Path

from llmpopcorn.core.paths import escape_unsafe_json, strip_unsafe
from llmpopcorn.core.redact import scrub
from llmpopcorn.core.types import RunRecord


def _escape(text: object) -> str:
    """HTML-escaped text with no bidi overrides or invisible controls (they could make
    a title read differently from what it is)."""
    return html.escape(strip_unsafe(str(text)))


def write_text_atomic(path: Path, data: str) -> None:
    """Write via a temporary file and rename, so a crash never leaves half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_record(record: RunRecord, run_dir: Path) -> Path:
    path = Path(run_dir) / "record.json"
    write_text_atomic(path, scrub(escape_unsafe_json(record.model_dump_json(indent=2))))
    return path


def load_record(run_dir: Path) -> RunRecord:
    return RunRecord.model_validate_json((Path(run_dir) / "record.json").read_text("utf-8"))


def _data_uri(path: Path, media_type: str) -> str:
    return f"data:{media_type};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1000px;color:#222;padding:0 1rem}
h1{font-size:1.4rem} .media{display:flex;gap:1.5rem;flex-wrap:wrap;align-items:flex-start}
.media img,.media video{width:270px;height:480px;object-fit:cover;border-radius:8px;background:#000}
table{border-collapse:collapse;width:100%;font-size:.9rem} td,th{border-bottom:1px solid #ddd;
padding:.3rem .5rem;text-align:left;vertical-align:top} .note{background:#fff6d5;padding:.6rem 1rem;
border-radius:6px} .failed{background:#fde2e2} code,pre{white-space:pre-wrap;word-break:break-word}
"""


def render_html(record: RunRecord, run_dir: Path) -> str:
    """A single HTML file with the cover and clip embedded; every text is escaped."""
    e = _escape
    run_dir = Path(run_dir)
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>LLMPopcorn: {e(record.idea.title if record.idea else record.query)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{e(record.idea.title) if record.idea else 'No idea produced'}</h1>",
        f"<p><b>Query:</b> {e(record.query)}<br><b>Mode:</b> {e(record.mode)} · "
        f"<b>Seed:</b> {record.seed} · <b>Run:</b> {e(record.run_id)} · "
        f"<b>Status:</b> {e(record.status)}</p>",
    ]
    if record.error:
        parts.append(f"<p class='note failed'><b>Error:</b> {e(record.error)}</p>")
    for note in record.notes:
        parts.append(f"<p class='note'>{e(note)}</p>")
    media = []
    cover, clip = record.artifact("cover"), record.artifact("clip")
    if cover and (run_dir / cover.path).exists():
        uri = _data_uri(run_dir / cover.path, cover.media_type)
        media.append(
            f"<figure><img src='{uri}' alt='cover'><figcaption>Cover</figcaption></figure>"
        )
    if clip and (run_dir / clip.path).exists():
        uri = _data_uri(run_dir / clip.path, clip.media_type)
        media.append(
            f"<figure><video src='{uri}' controls loop muted autoplay playsinline></video>"
            "<figcaption>3-second clip</figcaption></figure>"
        )
    if media:
        parts.append("<div class='media'>" + "".join(media) + "</div>")
    credits = [a.meta["credit"] for a in record.artifacts if isinstance(a.meta.get("credit"), dict)]
    for credit in credits:  # stock media: the providers ask for their authors to be credited
        what = "Video" if credit.get("what") == "clip" else "Photo"
        parts.append(
            f"<p><small>{what} by {e(credit.get('author', ''))} on {e(credit.get('source', ''))}"
            f" ({e(credit.get('url', ''))}), licence: {e(credit.get('licence_url', ''))}"
            "</small></p>"
        )
    if record.category:
        parts.append(
            f"<p>Category: <b>{e(record.category.get('name', ''))}</b> "
            f"<small>({e(record.category.get('source', ''))}"
            f"{', ' + e(str(record.category['method'])) if record.category.get('method') else ''})"
            "</small></p>"
        )
    if record.idea:
        parts.append("<h2>Idea</h2><table>")
        for key in ("title", "cover_prompt", "video_prompt"):
            parts.append(f"<tr><th>{key}</th><td>{e(getattr(record.idea, key))}</td></tr>")
        if record.idea.caption:  # the post's own text (never a generation prompt)
            parts.append(f"<tr><th>caption</th><td>{e(record.idea.caption)}</td></tr>")
        if record.idea.hashtags:
            parts.append(f"<tr><th>hashtags</th><td>{e(' '.join(record.idea.hashtags))}</td></tr>")
        parts.append("</table>")
    if record.variants:
        rows = "".join(
            f"<tr><td>{rank}</td><td>{v.seed}</td><td>{e(v.idea.title) if v.idea else ''}</td>"
            f"<td>{'' if v.expected_comments is None else f'{v.expected_comments:.1f}'}</td>"
            f"<td>{e(v.error or '')}"
            f"{e(f' (repeats: {v.duplicate_of})') if v.duplicate_of else ''}</td></tr>"
            for rank, v in enumerate(record.variants, start=1)
        )
        parts.append(
            "<h2>Variants ranked by predicted popularity</h2><table><tr><th>rank</th>"
            "<th>seed</th><th>title</th><th>expected comments</th><th>error</th></tr>"
            f"{rows}</table>"
        )
    parts.append(_refinement_html(record))
    if record.score:
        s = record.score
        interval = (
            f"{2 ** s.interval[0]:.0f}–{2 ** s.interval[1]:.0f} comments "
            f"({(s.interval_level or 0) * 100:.0f} % interval)"
            if s.interval
            else "n/a"
        )
        pct = (
            f"{s.percentile:.0f}th percentile of {e(s.category or '')}"
            if s.percentile is not None
            else ""
        )
        inputs = s.extra.get("inputs") or {}
        read = ", ".join([*inputs.get("fields", {}), "category"] if inputs else [])
        judged = f"; it read: {e(read)}" if read else ""
        independence = s.extra.get("independence") or {}
        overlap = (
            f"; {independence['references_in_judge_memory']} of "
            f"{independence['references']} references are in its training memory"
            + (
                f", {independence['references_title_in_judge_data']} share a title with a "
                "video it learned from"
                if independence.get("references_title_in_judge_data") is not None
                else ""
            )
            if independence.get("references")
            else ""
        )
        parts.append(
            "<h2>Predicted popularity</h2>"
            f"<p><b>{s.expected_comments:.0f}</b> comments expected "
            f"(log2 = {s.log2_comments:.2f}); "
            f"{interval}. {pct} <br><small>predictor: {e(s.predictor)}{judged}{e(overlap)}"
            "</small></p>"
        )
        parts.append(_calibrated_html(s.extra.get("calibrated")))
        if s.neighbours:
            parts.append(_reference_table("Similar videos that drove the score", s.neighbours))
    if record.references:
        parts.append(_enhancement_html(record))
        parts.append(
            _reference_table(
                "Why this idea: the reference videos it was built from (prompt enhancement)",
                record.references,
            )
        )
    backends = "".join(
        f"<tr><th>{e(stage)}</th><td>{e(use.name)}</td><td>{e(use.model or '')}</td></tr>"
        for stage, use in record.backends.items()
    )
    timings = ", ".join(f"{e(k)} {v:.2f} s" for k, v in record.timings.items())
    parts.append(f"<h2>Backends</h2><table>{backends}</table><p><small>{timings}</small></p>")
    parts.append("</body></html>")
    return "".join(parts)


def _enhancement_html(record: RunRecord) -> str:
    """PE's choices (categories, pools) and the copy check, above the reference table."""
    e = _escape
    pe = record.enhancement or {}
    lines = []
    if pe.get("categories"):
        cats = ", ".join(f"{e(c['name'])} ({c['videos']} videos)" for c in pe["categories"])
        shown = pe.get("shown", {})
        popular, unpopular = shown.get("popular", 0), shown.get("unpopular", 0)
        llm = record.backends.get("llm")
        if llm is not None and llm.is_llm is False and llm.name == "offline":
            from llmpopcorn.backends.llm.offline import _POPULAR_SHOWN  # what the stand-in reads

            lines.append(
                f"The prompt listed {popular} popular and {unpopular} unpopular videos from "
                f"{cats}, nearest to the query first. No LLM read them: the offline stand-in "
                f"used only the titles of the {min(popular, _POPULAR_SHOWN)} nearest popular "
                f"and the {unpopular} unpopular ones (to pick a title hook and topical words)."
            )
        else:
            lines.append(
                f"The LLM was shown {popular} popular and {unpopular} unpopular videos from "
                f"{cats}, nearest to the query first."
            )
    check = record.copy_check
    if check:
        match = check.get("match") or {}
        detail = f" (closest: {e(match.get('title', ''))}, video {e(str(match.get('video_id')))})"
        lines.append(
            f"Copy check: {e(check.get('status', ''))}{detail if match else ''}; "
            f"re-asked {check.get('reasked', 0)} time(s)."
        )
    return "".join(f"<p>{line}</p>" for line in lines)


def _refinement_html(record: RunRecord) -> str:
    """Every refinement round with both loop judges' predictions (``--refine K``)."""
    ref = record.refinement
    if ref is None:
        return ""
    e = _escape

    def value(score: dict | None) -> str:
        return (
            "" if not score else f"{2 ** score['log2_comments']:.0f} ({score['log2_comments']:.2f})"
        )

    rows = "".join(
        f"<tr><td>{r.round}{' (kept)' if r.round == ref.kept else ''}</td>"
        f"<td>{e(r.idea.title) if r.idea else e(r.error or '')}</td>"
        f"<td>{value(r.reward)}</td><td>{value(r.evaluation)}</td></tr>"
        for r in ref.rounds
    )
    judges = ref.judges
    return (
        "<h2>Refinement by a popularity judge</h2>"
        f"<p><small>{e(ref.method)}. Reward judge (chooses): "
        f"{e(str(judges.get('reward', {}).get('predictor')))}; evaluation judge (never shown, "
        f"never chooses): {e(str(judges.get('evaluation', {}).get('predictor')))}.</small></p>"
        "<table><tr><th>round</th><th>title</th><th>reward judge: comments (log2)</th>"
        f"<th>evaluation judge: comments (log2)</th></tr>{rows}</table>"
    )


def _calibrated_html(calibrated: dict | None) -> str:
    """The creator's calibrated score (``popcorn predictor calibrate``), when there is one."""
    if not calibrated:
        return ""
    e = _escape
    low_high = calibrated.get("interval")
    interval = (
        f", {2 ** low_high[0]:.0f}–{2 ** low_high[1]:.0f} with the judge's interval width"
        if low_high
        else ""
    )
    return (
        f"<p>Calibrated to your posts: <b>{calibrated['expected_comments']:.0f}</b> comments "
        f"(log2 = {calibrated['log2_comments']:.2f}{interval}) <small>from "
        f"{calibrated['posts']} of your posts with recorded outcomes "
        f"({e(str(calibrated.get('method', '')))}, fitted {e(str(calibrated.get('fitted', '')))})"
        "</small></p>"
    )


def _reference_table(heading: str, refs) -> str:
    e = _escape
    rows = "".join(
        f"<tr><td>{e(r.video_id)}</td><td>{e(r.label)}</td><td>{e(r.title)}</td>"
        f"<td>{'' if r.comment_count is None else r.comment_count}</td>"
        f"<td>{'' if r.similarity is None else f'{r.similarity:.3f}'}</td></tr>"
        for r in refs
    )
    return (
        f"<h2>{e(heading)}</h2><table><tr><th>id</th><th>label</th><th>title</th>"
        f"<th>comments</th><th>similarity</th></tr>{rows}</table>"
    )


def save_report(record: RunRecord, run_dir: Path) -> Path:
    path = Path(run_dir) / "report.html"
    write_text_atomic(path, scrub(render_html(record, run_dir)))
    return path


def record_json(record: RunRecord) -> str:
    text = json.dumps(record.model_dump(mode="json"), indent=2, ensure_ascii=False)
    return scrub(escape_unsafe_json(text))
