import pytest

from llmpopcorn.core.errors import InputError
from llmpopcorn.core.paths import MAX_QUERY_CHARS, clean_query, make_run_dir, slugify

HOSTILE = [
    "../../etc/passwd",
    "/absolute/path",
    "..",
    "a/b\\c",
    "nul\x00byte",
    "ctrl\x1b[31mred\x07",
    "x" * 10_000,
    "🎬🐶🌊",
    "CON",
    "   spaced   out   ",
]


@pytest.mark.parametrize("query", HOSTILE)
def test_run_dirs_never_escape_the_root(tmp_path, query):
    root = tmp_path / "runs"
    path = make_run_dir(root, query[:MAX_QUERY_CHARS], "20260101-000000-abcdef")
    assert path.parent == root.resolve()
    assert path.is_dir()
    name = path.name
    assert "/" not in name and "\\" not in name and "\x00" not in name and ".." not in name
    assert len(name) < 80


@pytest.mark.parametrize("query", ["", "   ", "\n\t", "\x00\x01", None])
def test_empty_queries_are_rejected(query):
    with pytest.raises(InputError, match="empty|no query"):
        clean_query(query)


def test_overlong_query_is_rejected_with_its_length():
    with pytest.raises(InputError, match="10000 characters"):
        clean_query("x" * 10_000)


def test_control_characters_are_removed():
    assert clean_query("a\x00b\x1bc\nd") == "a b c d"


def test_slug_basics():
    assert slugify("A Corgi, learns to SURF!") == "a-corgi-learns-to-surf"
    assert slugify("Café déjà vu") == "cafe-deja-vu"
    assert slugify("🎬🐶") == "query"
    assert len(slugify("word " * 100)) <= 40


def test_csv_cells_never_start_like_a_formula():
    import csv
    import io

    from llmpopcorn.core.paths import spreadsheet_safe, write_csv

    assert spreadsheet_safe('=HYPERLINK("http://x","click")') == '\'=HYPERLINK("http://x","click")'
    for start in "=+-@\t\r":
        assert spreadsheet_safe(f"{start}x") == f"'{start}x"
    assert spreadsheet_safe("A corgi surfs") == "A corgi surfs"
    assert spreadsheet_safe(-1.5) == -1.5 and spreadsheet_safe(None) is None
    fh = io.StringIO()
    write_csv(fh, ["title", "score"], [{"title": "@SUM(A1)", "score": -2.0, "extra": "x"}])
    assert list(csv.DictReader(io.StringIO(fh.getvalue()))) == [
        {"title": "'@SUM(A1)", "score": "-2.0"}
    ]
