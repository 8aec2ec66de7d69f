import hashlib

import numpy as np
import pytest

from llmpopcorn.backends.base import ImageRequest, VideoRequest
from llmpopcorn.backends.image.draft import DraftCover
from llmpopcorn.backends.media import fit_duration, probe_mp4, save_png, write_mp4
from llmpopcorn.backends.video.draft import DraftClip


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_cover_is_9_16_and_byte_identical_for_same_inputs(tmp_path):
    backend = DraftCover(width=270, height=480)
    req = ImageRequest(prompt="a corgi on a surfboard", title="Corgi surfs!", seed=3)
    a = save_png(backend.generate(req), tmp_path / "a.png")
    b = save_png(backend.generate(req), tmp_path / "b.png")
    assert sha(a) == sha(b)
    c = save_png(
        backend.generate(ImageRequest(prompt=req.prompt, title=req.title, seed=4)),
        tmp_path / "c.png",
    )
    assert sha(a) != sha(c)
    assert backend.generate(req).size == (270, 480)


def test_default_cover_size_is_1080x1920():
    assert DraftCover().generate(ImageRequest(prompt="p", title="t")).size == (1080, 1920)


def test_long_title_is_wrapped_inside_the_band():
    """Text pixels (white) must stay inside the image margins: never cut off."""
    backend = DraftCover(width=270, height=480)
    title = "Supercalifragilisticexpialidocious corgi surfing adventures!!"
    img = np.asarray(backend.generate(ImageRequest(prompt="p", title=title, seed=1)))
    white = (img > 245).all(axis=2)
    ys, xs = np.nonzero(white)
    assert len(xs) > 50  # the title was drawn
    assert xs.min() >= 5 and xs.max() <= 265


def test_clip_is_three_seconds_h264_with_motion_and_deterministic(tmp_path):
    # 160 px = 10 macroblocks: with an odd number of macroblocks per row (e.g. 144 px) the
    # first libx264 encode in a process was seen to differ from later ones; the shipped
    # sizes (540, 1080 and the diffusion presets) have even counts
    backend = DraftClip(width=160, height=288, fps=24)
    req = VideoRequest(prompt="waves", title="Corgi", seed=5)
    clip = backend.generate(req)
    assert len(clip.frames) == 72 and clip.seconds == 3.0
    p1 = write_mp4(clip, tmp_path / "a.mp4")
    p2 = write_mp4(backend.generate(req), tmp_path / "b.mp4")
    info1, info2 = probe_mp4(p1, decode=True), probe_mp4(p2, decode=True)
    assert info1["codec"] == "h264" and info1["pix_fmt"] == "yuv420p"
    assert (info1["width"], info1["height"], info1["frames"]) == (160, 288, 72)
    assert abs(info1["seconds"] - 3.0) < 1e-6
    assert all(
        np.array_equal(x, y) for x, y in zip(info1["decoded"], info2["decoded"], strict=True)
    )
    assert p1.read_bytes() == p2.read_bytes()
    first, last = info1["decoded"][0].astype(int), info1["decoded"][-1].astype(int)
    assert np.abs(first - last).mean() > 5  # visible motion


def test_yuv_conversion_matches_known_colours():
    from llmpopcorn.backends.media import rgb_to_yuv420p

    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[:2, :2] = (255, 255, 255)  # white block: Y=235, U=V=128
    yuv = rgb_to_yuv420p(rgb)
    assert yuv.shape == (6, 4)
    assert yuv[0, 0] == 235 and yuv[3, 3] == 16  # Y plane: white, black
    u = yuv[4:5].ravel()[:4].reshape(2, 2)
    assert (np.abs(u.astype(int) - 128) <= 1).all()


def test_fit_duration_trims_and_resamples():
    frames = [np.full((2, 2, 3), i, np.uint8) for i in range(10)]
    assert len(fit_duration(frames, 2, 3.0)) == 6
    stretched = fit_duration(frames[:3], 4, 3.0)
    assert len(stretched) == 12 and stretched[0][0, 0, 0] == 0 and stretched[-1][0, 0, 0] == 2


def test_clip_from_cover_pushes_in_on_the_cover():
    from PIL import Image

    from llmpopcorn.core.errors import RenderError

    cover = DraftCover(width=90, height=160).generate(ImageRequest(prompt="p", title="T", seed=1))
    backend = DraftClip(width=90, height=160, fps=8, from_cover=True)
    clip = backend.generate(VideoRequest(prompt="v", title="T", seed=1, cover=cover))
    assert len(clip.frames) == 24 and clip.meta["from_cover"] is True
    assert clip.frames[0].shape == (160, 90, 3)
    first = np.asarray(clip.frames[0]).astype(int)
    assert np.abs(first - np.asarray(cover).astype(int)).mean() < 2  # starts on the cover
    assert np.abs(first - np.asarray(clip.frames[-1]).astype(int)).mean() > 1  # and moves
    with pytest.raises(RenderError, match="needs a rendered cover"):
        backend.generate(VideoRequest(prompt="v"))
    assert isinstance(cover, Image.Image)


def test_from_cover_setting_reaches_the_draft_backend():
    from llmpopcorn.core.registry import registry
    from llmpopcorn.core.settings import Settings

    backend = registry.create("video", "draft", Settings.resolve(env={}, video_from_cover=True))
    assert backend.from_cover is True and backend.options()["from_cover"] is True


def test_draft_clip_frames_are_yuv420p_and_look_like_the_title_card():
    """The clip is drawn in the encoder's planes; as RGB it still shows the title (white
    text in the bottom band, fading in) over a scrolling background that moves."""
    from llmpopcorn.backends.media import YUVFrame

    clip = DraftClip(width=180, height=320, fps=8).generate(
        VideoRequest(prompt="waves", title="Corgi surfs", seed=2)
    )
    assert len(clip.frames) == 24
    assert all(isinstance(f, YUVFrame) and f.shape == (320, 180, 3) for f in clip.frames)
    assert clip.frames[0].data.shape == (480, 180)
    first, last = np.asarray(clip.frames[0]), np.asarray(clip.frames[-1])
    assert last.shape == (320, 180, 3) and last.dtype == np.uint8
    white = (last > 235).all(axis=2)
    band = white[int(320 * 0.70) : int(320 * 0.92)]
    assert band.sum() > 100 and white.sum() == band.sum()  # title only in its band
    assert not (first > 235).all(axis=2).any()  # opacity 0 on the first frame
    assert np.abs(first.astype(int) - last.astype(int)).mean() > 5


def test_draft_clip_rejects_odd_sizes():
    from llmpopcorn.core.errors import RenderError

    with pytest.raises(RenderError, match="even sizes"):
        DraftClip(width=91, height=160, fps=4).generate(VideoRequest(prompt="p", seed=1))


def test_yuv_frame_round_trips_rgb():
    from llmpopcorn.backends.media import YUVFrame, rgb_to_yuv420p

    y, x = np.mgrid[0:64, 0:48]
    rgb = np.stack([y * 3, x * 5, 255 - y * 2], axis=2).astype(np.uint8)  # smooth colours
    frame = YUVFrame(rgb_to_yuv420p(rgb))
    assert frame.shape == (64, 48, 3) and rgb_to_yuv420p(frame) is frame.data
    assert np.abs(np.asarray(frame).astype(int) - rgb).mean() < 2
    with pytest.raises(Exception, match="not a yuv420p frame"):
        YUVFrame(np.zeros((10, 48), np.uint8))


def test_disc_blended_in_yuv_matches_rgb_paste_then_conversion():
    """Alpha blending commutes with the (affine) BT.601 conversion: a disc blended in
    the planes equals Pillow's RGB paste converted afterwards, up to rounding."""
    from PIL import Image

    from llmpopcorn.backends.media import YUVFrame, rgb_to_yuv420p
    from llmpopcorn.backends.video.draft import _Disc, _disc

    background, colour, radius = (30, 120, 200), (250, 200, 20), 9.3
    for x, y in ((5, 7), (10, 4), (-6, 30), (40, 45)):  # odd/even, clipped at the edges
        image = Image.new("RGB", (48, 64), background)
        image.paste(colour, (x, y), _disc(radius))
        want = rgb_to_yuv420p(np.asarray(image)).astype(int)
        plain = rgb_to_yuv420p(np.asarray(Image.new("RGB", (48, 64), background)))
        frame = YUVFrame(plain.copy())
        _Disc(radius, colour).draw(*frame.planes(), x, y)
        assert (frame.data != plain).any()  # the disc was drawn
        assert np.abs(frame.data.astype(int) - want).max() <= 1, (x, y)


def test_title_blended_in_yuv_matches_rgb_paste_then_conversion():
    """The title (white text, black outline, anti-aliased) drawn in the planes at full
    and half opacity equals the old RGB paste converted afterwards, up to rounding
    (within 1 here; chroma is blended premultiplied per 2x2 block, so over a gradient
    or a disc edge a few chroma samples of a clip differ by more)."""
    from PIL import Image, ImageDraw

    from llmpopcorn.backends.draw import draw_text_block
    from llmpopcorn.backends.media import YUVFrame, rgb_to_yuv420p
    from llmpopcorn.backends.video.draft import _TitleOverlay

    width, height = 180, 320
    base = Image.new("RGB", (width, height))
    ImageDraw.Draw(base).rectangle((0, 0, width, height // 2), fill=(200, 60, 90))
    ImageDraw.Draw(base).rectangle((0, height // 2, width, height), fill=(20, 140, 60))
    title = _TitleOverlay("A corgi learns to surf", width, height)
    layer = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    margin = width // 12
    box = (margin, int(height * 0.70), width - margin, int(height * 0.92))
    draw_text_block(layer, "A corgi learns to surf", box, start_size=width // 11)
    for opacity in (1.0, 0.5):
        level = round(255 * opacity)
        want = base.copy()
        mask = layer.getchannel("A").point([v * level // 255 for v in range(256)])
        want.paste(layer.convert("RGB"), (0, 0), mask)
        want = rgb_to_yuv420p(np.asarray(want)).astype(int)
        frame = YUVFrame(rgb_to_yuv420p(np.asarray(base)).copy())
        title.draw(*frame.planes(), opacity)
        diff = np.abs(frame.data.astype(int) - want)
        assert diff[:height].max() <= 1 and diff[:height].sum() < diff.size  # luma
        assert diff[height:].max() <= 2  # chroma (flat background under the text)
        assert np.abs(want - rgb_to_yuv420p(np.asarray(base))).max() > 50  # text shows
