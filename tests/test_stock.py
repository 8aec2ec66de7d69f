"""Stock footage as renderers (pexels, pixabay) against a local fake of the providers' APIs:
a creator with only a free key gets a cover and a clip made from the provider's media,
searched by the idea's keywords, vertical first, cut to 9:16 and 3 s, with the title on,
credited in the record, the report and the package; the key goes to the API origin only."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

from fake_stock_server import GREEN, FakeStock
from llmpopcorn.backends.base import ImageRequest, VideoRequest
from llmpopcorn.backends.stock.base import StockOptions
from llmpopcorn.backends.stock.pexels import PexelsClip, PexelsCover
from llmpopcorn.backends.stock.pixabay import PixabayClip, PixabayCover
from llmpopcorn.cli import main
from llmpopcorn.core.errors import PopcornError

KEY = "pexels-test-key-0123456789"


def _make(fake, out, *extra, env=None):
    args = [
        "make",
        "a corgi learns to surf",
        "--image",
        "pexels",
        "--video",
        "pexels",
        "--image-opt",
        f"base_url={fake.api}",
        "--video-opt",
        f"base_url={fake.api}",
        "--out",
        str(out),
        "--json",
        "--no-score",  # the judge is not under test here
        *extra,
    ]
    env = {"PEXELS_API_KEY": KEY} if env is None else env
    return CliRunner().invoke(main, args, env=env)


def _near(pixel, colour, tolerance=40) -> bool:
    return all(abs(int(a) - int(b)) <= tolerance for a, b in zip(pixel, colour, strict=True))


def test_make_with_a_free_key_gives_the_providers_media_credited(tmp_path):
    from PIL import Image

    from llmpopcorn.backends.media import probe_mp4

    with FakeStock() as fake:
        result = _make(fake, tmp_path / "runs", "--package")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    run_dir = tmp_path / "runs" / record["run_dir"].rsplit("/", 1)[-1]
    cover = next(a for a in record["artifacts"] if a["kind"] == "cover")
    clip = next(a for a in record["artifacts"] if a["kind"] == "clip")
    # credited: source, author, page and licence, as the providers ask
    assert cover["meta"]["credit"] == {
        "what": "cover",
        "source": "Pexels",
        "id": "101",
        "author": "Ana Lens",
        "author_url": "https://www.pexels.com/@ana",
        "url": "https://www.pexels.com/photo/101/",
        "licence_url": "https://www.pexels.com/license/",
        "query": "corgi surf",
    }
    # the vertical video, though the landscape one came first
    assert clip["meta"]["credit"]["id"] == "202" and clip["meta"]["credit"]["author"]
    # made from the provider's pixels: green above the title, 9:16, 3 s
    picture = np.asarray(Image.open(run_dir / "cover.png").convert("RGB"))
    assert picture.shape == (1920, 1080, 3) and _near(picture[300, 540], GREEN)
    info = probe_mp4(run_dir / "clip.mp4", decode=True)
    assert (info["width"], info["height"]) == (540, 960) and info["seconds"] == pytest.approx(3.0)
    first = info["decoded"][0]
    assert _near(first[100, 270], GREEN)  # the provider's frame, not a draft gradient
    bar_rows = [int(np.argmax(f[:, 270].sum(axis=1))) for f in info["decoded"][::30]]
    assert bar_rows == sorted(bar_rows) and bar_rows[-1] > bar_rows[0]  # its motion kept
    assert not _near(first[int(960 * 0.8), 270], GREEN, 5) or not _near(
        info["decoded"][-1][int(960 * 0.8), 270], GREEN, 5
    )  # the title drawn low in the frame
    # the key: to the API origin only, never to the file host, never written down
    api, files = fake.api_requests(), fake.file_requests()
    assert {r["path"] for r in api} == {"/v1/search", "/videos/search"}
    assert all(r["headers"].get("authorization") == KEY for r in api)
    assert all(r["query"]["orientation"] == "portrait" for r in api)
    assert files and all("authorization" not in r["headers"] for r in files)
    written = "".join(p.read_text("utf-8", "replace") for p in run_dir.iterdir() if p.is_file())
    assert KEY not in written
    # the report and the package credit the authors; the package says what the media are
    assert "Ana Lens" in (run_dir / "report.html").read_text()
    meta = json.loads(zipfile.ZipFile(run_dir / "package.zip").read("metadata.json"))
    assert [c["source"] for c in meta["credits"]] == ["Pexels", "Pexels"]
    assert "Photo by Ana Lens on Pexels (https://www.pexels.com/photo/101/)" in meta["post_text"]
    assert meta["disclosure"].startswith("Stock media: the cover and the clip of this post")
    assert meta["ai_generated"] is False and meta["synthetic"] is False
    assert meta["digital_source_type"]["clip"].endswith("/composite")


def test_a_query_with_nothing_found_falls_back_to_each_keyword(tmp_path):
    with FakeStock() as fake:
        fake.empty.add("corgi surf")
        result = _make(fake, tmp_path / "runs")
        assert result.exit_code == 0, result.output
        asked = [r["query"]["query"] for r in fake.api_requests()]
    assert asked[:2] == ["corgi surf", "corgi"]
    record = json.loads(result.stdout)
    assert (
        next(a for a in record["artifacts"] if a["kind"] == "clip")["meta"]["credit"]["query"]
        == "corgi"
    )


def test_nothing_found_at_all_is_an_error_with_a_hint(tmp_path):
    with FakeStock() as fake:
        fake.empty.update({"corgi surf", "corgi", "surf"})
        result = _make(fake, tmp_path / "runs")
    assert result.exit_code == 2
    assert "Pexels has no photo for 'corgi surf', 'corgi', 'surf'" in result.output
    assert "hint:" in result.output


def test_no_key_names_the_variable_and_where_to_get_a_free_one(tmp_path):
    with FakeStock() as fake:
        result = _make(fake, tmp_path / "runs", env={})
        assert fake.requests == []  # nothing was asked without a key
    assert result.exit_code == 2
    assert "PEXELS_API_KEY" in result.output and "https://www.pexels.com/api/new/" in result.output
    assert not PexelsCover.availability().ok


def test_the_byte_cap_applies_to_stock_downloads(tmp_path):
    with FakeStock() as fake:
        result = _make(fake, tmp_path / "runs", "--video-opt", "max_download_mb=0.001")
    assert result.exit_code == 2 and "too large" in result.output.lower(), result.output


def test_pixabay_key_goes_in_the_query_to_the_api_only(monkeypatch):
    monkeypatch.setenv("PIXABAY_API_KEY", "pixabay-key-42")
    with FakeStock() as fake:
        opts = StockOptions(base_url=fake.api)
        cover = PixabayCover(opts, api_key="pixabay-key-42").generate(
            ImageRequest(prompt="p", title="Corgi surf", keywords=["corgi"])
        )
        clip = PixabayClip(opts, api_key="pixabay-key-42").generate(
            VideoRequest(prompt="p", title="Corgi surf", keywords=["corgi"], seconds=3.0)
        )
        api, files = fake.api_requests(), fake.file_requests()
    assert [r["path"] for r in api] == ["/api/", "/api/videos/"]
    assert all(r["query"]["key"] == "pixabay-key-42" for r in api)
    assert api[0]["query"]["orientation"] == "vertical"
    assert files and all("key" not in r["query"] for r in files)
    assert cover.info["credit"]["source"] == "Pixabay" and cover.size == (1080, 1920)
    assert clip.meta["credit"]["author_url"] == "https://pixabay.com/users/pixa_video-8/"
    assert len(clip.frames) == 90 and clip.fps == 30.0


def test_without_keywords_the_title_is_searched():
    with FakeStock() as fake:
        backend = PexelsClip(StockOptions(base_url=fake.api), api_key=KEY)
        backend.generate(VideoRequest(prompt="p", title="Otters juggling pebbles", seconds=1.0))
        assert fake.api_requests()[0]["query"]["query"] == "Otters juggling pebbles"


def test_a_provider_answer_naming_an_internal_address_is_refused():
    """The policy is the project's (backends/outbound.py): a file link on a link-local
    address is never fetched, whatever the provider says."""
    with FakeStock() as fake:
        backend = PexelsCover(StockOptions(base_url=fake.api), api_key=KEY)
        original = fake._pexels_photo

        def evil():
            photo = original()
            photo["src"]["original"] = "http://169.254.169.254/latest/meta-data"
            return photo

        fake._pexels_photo = evil
        with pytest.raises(PopcornError, match="refused"):
            backend.generate(ImageRequest(prompt="p", title="t", keywords=["corgi"]))
        assert not fake.file_requests()
