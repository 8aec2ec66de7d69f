"""``popcorn corpus``: inspect the MicroLens table and build its embedding cache."""

from __future__ import annotations

import json

import click

from llmpopcorn.cli import main
from llmpopcorn.cli.options import options_for, setting_option, settings_from

_DATA = setting_option("data_dir")
_CONFIG = options_for()  # --config alone


@main.group("corpus")
def corpus_group() -> None:
    """The MicroLens corpus: what it holds, and its cached embeddings."""


@corpus_group.command("info")
@_DATA
@_CONFIG
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def info_command(as_json: bool, **params) -> None:
    """Rows, categories with counts, comment-count quantiles and the text fields present."""
    from llmpopcorn.corpus.table import corpus_summary, load_corpus

    settings = settings_from(params)
    summary = corpus_summary(load_corpus(settings.data_dir))
    if as_json:
        click.echo(json.dumps(summary, indent=2, ensure_ascii=False))
        return
    rows = summary["rows"]
    click.echo(f"Corpus:     {summary['path']}")
    click.echo(f"SHA-256:    {summary['sha256']}")
    rejected = sum(summary["rejected"].values())
    detail = f" ({rejected} rejected: {summary['rejected']})" if rejected else ""
    click.echo(f"Rows:       {rows:,}{detail}")
    click.echo(f"Categories: {len(summary['categories'])}")
    for name, n in summary["categories"].items():
        click.echo(f"  {name:<28} {n:>7,}  {n / rows:6.1%}")
    quantiles = "  ".join(f"q{k}={v:g}" for k, v in summary["comment_count_quantiles"].items())
    click.echo(f"Comment count quantiles: {quantiles}")
    click.echo("Text fields (rows with their own content):")
    for name, n in summary["fields_present"].items():
        click.echo(f"  {name:<12} {n:>7,} / {rows:,}")
    copies = summary["cover_desc_copies_title"]
    if copies:
        click.echo(
            f"  (cover_desc is a copy of title_en in {copies:,} rows: embedded and shown once)"
        )


@corpus_group.command("index")
@_DATA
@_CONFIG
@setting_option("embedder")
@setting_option("embedder_model")
@setting_option("cache_dir")
@setting_option("device")
def index_command(**params) -> None:
    """Embed the corpus once into the cache (later PE runs load it in a second).

    Shows progress with the time left; an interrupted build resumes where it stopped."""
    from llmpopcorn.core.cache import default_cache_dir
    from llmpopcorn.corpus.index import get_embedder, load_or_build
    from llmpopcorn.corpus.table import load_corpus

    settings = settings_from(params)
    corpus = load_corpus(settings.data_dir)
    embedder = get_embedder(settings.embedder, settings)
    cache_dir = default_cache_dir(settings)
    # a bar with the rate and time left on stderr while it embeds; the first batch
    # gives an estimate of the whole
    entry = load_or_build(corpus, embedder, cache_dir, progress=True)
    rows, dims = entry.items.shape
    saved = (cache_dir / "embeddings" / f"{entry.key}.json").exists()
    state = "loaded from the cache" if entry.hit else ("built and saved" if saved else "built")
    click.echo(f"{rows:,} x {dims} embeddings ({embedder.id}) {state} in {entry.seconds:.2f} s")
    if entry.reused or entry.resumed:
        click.echo(
            f"({entry.reused:,} rows reused from the shipped predictor's memory, "
            f"{entry.resumed:,} from an interrupted build)"
        )
    click.echo(f"Cache: {cache_dir / 'embeddings' / entry.key}.*")
