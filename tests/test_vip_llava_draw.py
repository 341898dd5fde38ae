"""VipLlava-style visual prompts (vlexport.families.vip_llava.draw): the drawn pixels are where the
shape is and nowhere else, the input image is never changed, and any spec string either draws or
raises InputError (a hypothesis property over random strings and random well-formed specs)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from vlexport.errors import InputError
from vlexport.families.vip_llava.draw import (
    VisualPrompt, arrow_head, default_width, draw_visual_prompt, load_image, parse_color, parse_visual_prompt)

GRAY = (128, 128, 128)
RED = (255, 0, 0)
W, H = 320, 240


def canvas(mode="RGB", size=(W, H)):
    return Image.new(mode, size, GRAY if mode == "RGB" else 128)


def changed(before: Image.Image, after: Image.Image) -> np.ndarray:
    a, b = np.asarray(before.convert("RGB")).astype(int), np.asarray(after.convert("RGB")).astype(int)
    return (a != b).any(-1)


def is_color(after, rgb=RED) -> np.ndarray:
    return (np.asarray(after.convert("RGB")) == np.array(rgb, np.uint8)).all(-1)


def grid():
    y, x = np.mgrid[0:H, 0:W]
    return x + 0.5, y + 0.5  # pixel centres


def seg_distance(px, py, x0, y0, x1, y1):
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((px - x0) * dx + (py - y0) * dy) / (dx * dx + dy * dy), 0, 1)
    return np.hypot(px - (x0 + t * dx), py - (y0 + t * dy))


# ------------------------------------------------------------------------------------ shapes

def test_box_outline_drawn_interior_and_far_pixels_untouched():
    im = canvas()
    w = 6
    out = draw_visual_prompt(im, "box:40,40,200,180", width=w)
    red, diff = is_color(out), changed(im, out)
    assert (red == diff).all()  # every changed pixel has the colour
    for x, y in ((120, 42), (120, 177), (42, 110), (197, 110), (40, 40), (200, 180)):  # on each edge, corners
        assert red[y, x], (x, y)
    assert not diff[40 + w + 1:180 - w, 40 + w + 1:200 - w].any()  # the interior stays untouched
    px, py = grid()
    inside_band = (px >= 40 - 1) & (px <= 201 + 1) & (py >= 40 - 1) & (py <= 181 + 1)
    assert not diff[~inside_band].any()  # nothing outside the box (Pillow draws the width inward)
    # width: a row through the left edge is red for w pixels from x0
    assert red[110, 40:40 + w].all() and not red[110, 40 + w + 1]


def test_ellipse_outline_near_the_curve():
    im = canvas()
    w = 4
    out = draw_visual_prompt(im, "ellipse:60,30,260,210", width=w)
    red, diff = is_color(out), changed(im, out)
    assert (red == diff).all()
    cx, cy, a, b = 160, 120, 100, 90
    for t in np.linspace(0, 2 * math.pi, 48, endpoint=False):  # just inside the curve: the outline's band
        x, y = cx + (a - w / 2) * math.cos(t), cy + (b - w / 2) * math.sin(t)
        assert red[int(y), int(x)], (t, x, y)
    px, py = grid()
    r = np.hypot((px - cx) / a, (py - cy) / b)
    assert not diff[(r < 1 - (w + 2) / b) | (r > 1 + 2 / b)].any()  # the centre and the outside untouched


def test_arrow_line_and_filled_head():
    im = canvas()
    w = 4
    x0, y0, x1, y1 = 300, 20, 100, 200
    out = draw_visual_prompt(im, f"arrow:{x0},{y0},{x1},{y1}", width=w, color="#00ff00")
    green, diff = is_color(out, (0, 255, 0)), changed(im, out)
    assert (green == diff).all()
    for t in (0.1, 0.3, 0.5, 0.7):  # along the shaft
        assert green[int(y0 + t * (y1 - y0)), int(x0 + t * (x1 - x0))], t
    tip, left, right = arrow_head(x0, y0, x1, y1, w)
    head = math.hypot(tip[0] - (left[0] + right[0]) / 2, tip[1] - (left[1] + right[1]) / 2)
    assert head == pytest.approx(4 * w)
    # the head is filled: its centroid, points between centroid and each corner, and near the tip
    cxh, cyh = (tip[0] + left[0] + right[0]) / 3, (tip[1] + left[1] + right[1]) / 3
    for px_, py_ in [(cxh, cyh)] + [((cxh + c[0]) / 2, (cyh + c[1]) / 2) for c in (tip, left, right)]:
        assert green[int(round(py_)), int(round(px_))], (px_, py_)
    ux, uy = (x1 - x0) / math.hypot(x1 - x0, y1 - y0), (y1 - y0) / math.hypot(x1 - x0, y1 - y0)
    assert green[int(round(y1 - 2 * uy)), int(round(x1 - 2 * ux))]  # two pixels back from the tip
    px, py = grid()
    assert not diff[seg_distance(px, py, x0, y0, x1, y1) > head / 2 + w + 1.5].any()  # nothing far from it
    for d in range(3, 40):  # nothing beyond the tip
        assert not diff[int(round(y1 + uy * d)), int(round(x1 + ux * d))], d


def test_scribble_follows_its_points():
    im = canvas()
    pts = [(10, 200), (60, 150), (120, 210), (200, 120), (300, 180)]
    w = 5
    out = draw_visual_prompt(im, "scribble:" + ",".join(f"{x},{y}" for x, y in pts), width=w, color="blue")
    blue, diff = is_color(out, (0, 0, 255)), changed(im, out)
    assert (blue == diff).all()
    for (xa, ya), (xb, yb) in zip(pts, pts[1:]):
        for t in (0.25, 0.5, 0.75):
            assert blue[int(ya + t * (yb - ya)), int(xa + t * (xb - xa))]
    px, py = grid()
    near = np.zeros((H, W), bool)
    for (xa, ya), (xb, yb) in zip(pts, pts[1:]):
        near |= seg_distance(px, py, xa, ya, xb, yb) <= w / 2 + 1.5
    assert not diff[~near].any()


def test_several_prompts_colours_and_the_input_is_untouched():
    photo = Image.fromarray(np.random.RandomState(0).randint(0, 256, (H, W, 3), np.uint8))
    before = np.asarray(photo).copy()
    out = draw_visual_prompt(photo, ["box:10,10,100,100", VisualPrompt("ellipse", ((150, 20), (300, 120)))],
                             color="#12ab34")
    assert out is not photo and np.array_equal(np.asarray(photo), before)
    assert is_color(out, (0x12, 0xAB, 0x34))[10, 50] and is_color(out, (0x12, 0xAB, 0x34))[70, 150]
    arr = before.copy()
    out2 = draw_visual_prompt(arr, "box:10,10,100,100", color=(0, 0, 0))  # arrays (and paths) are loaded
    assert np.array_equal(arr, before) and is_color(out2, (0, 0, 0))[10, 50]
    for mode in ("L", "P", "RGBA"):
        im = canvas("RGB").convert(mode)
        raw = im.tobytes()
        out = draw_visual_prompt(im, "box:5,5,50,50")
        assert im.tobytes() == raw and out.mode == ("RGBA" if mode == "RGBA" else "RGB")
        assert is_color(out)[5, 20]


def test_default_width_scales_with_the_short_side(tmp_path):
    assert default_width((336, 336)) == 5 and default_width((1000, 3000)) == 15 and default_width((40, 20)) == 2
    big = Image.new("RGB", (1000, 800), GRAY)
    out = draw_visual_prompt(big, "box:100,100,600,500")
    red = is_color(out)
    assert red[300, 100:100 + default_width(big.size)].all() and not red[300, 100 + default_width(big.size) + 1]
    path = tmp_path / "photo.png"
    big.save(path)
    assert load_image(path).size == (1000, 800)
    assert draw_visual_prompt(str(path), "arrow:900,700,500,400").size == (1000, 800)


# ------------------------------------------------------------------------------------ errors

@pytest.mark.parametrize("spec, message", [
    ("circle:1,2,3,4", "not a known shape"),
    ("box 1,2,3,4", "expected SHAPE:"),
    ("", "expected SHAPE:"),
    ("box:1,2,3", "takes 4 coordinates"),
    ("arrow:1,2,3,4,5,6", "takes 4 coordinates"),
    ("scribble:1,2", "two or more points"),
    ("scribble:1,2,3,4,5", "two or more points"),
    ("box:1,2,three,4", "coordinate 3 .* is not a number"),
    ("box:1,2,,4", "coordinate 3 .* is not a number"),
    ("box:1,2,nan,4", "not a number"),
    ("box:1,2,1e999,4", "not a finite number"),
    ("box:1,2,500,4", r"point 2 \(500, 4\) lies outside the 320x240 image"),
    ("ellipse:-1,2,30,40", "outside"),
    ("box:10,10,10,50", "needs an area"),
    ("arrow:10,10,10,10", "same point"),
])
def test_bad_specs_raise_input_error(spec, message):
    with pytest.raises(InputError, match=message):
        parse_visual_prompt(spec, (W, H))
    with pytest.raises(InputError, match=message):
        draw_visual_prompt(canvas(), spec)


def test_bad_width_colour_and_types():
    for width in (0, -3, float("nan"), "5", True):
        with pytest.raises(InputError, match="width"):
            draw_visual_prompt(canvas(), "box:1,1,50,50", width=width)
        with pytest.raises(InputError, match="width"):
            parse_visual_prompt("box:1,1,50,50", width=width)
    for color in ("notacolour", "#12", 5, (300, 0, 0), (1, 2)):
        with pytest.raises(InputError, match="colou?r"):
            draw_visual_prompt(canvas(), "box:1,1,50,50", color=color)
    with pytest.raises(InputError, match="must be a string"):
        parse_visual_prompt(42)
    with pytest.raises(InputError, match="empty list"):
        draw_visual_prompt(canvas(), [])
    with pytest.raises(InputError, match="not an image"):
        draw_visual_prompt(object(), "box:1,1,5,5")
    assert parse_color("RED") == RED and parse_color("#f00") == RED
    p = parse_visual_prompt(" Box : 1.5, 2 ,30,40 ", (W, H))
    assert p == VisualPrompt("box", ((1.5, 2.0), (30.0, 40.0))) and parse_visual_prompt(p.spec()) == p


# ------------------------------------------------------------------------------- properties

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

EXAMPLES = max(300, settings.default.max_examples)
_ALPHABET = st.sampled_from(list("boxelipsarwcrbl:,.-+e0123456789 ;#") + ["box:", "arrow:", "ellipse:", "scribble:"])
in_image = st.one_of(st.integers(0, 48), st.floats(0, 48))  # the property images are 64x48
bad_number = st.one_of(st.integers(-50, 400), st.floats(allow_nan=True, allow_infinity=True),
                       st.sampled_from(["nan", "inf", "1e3", "", " ", "x", "-0", ".5", "5.", "1e-3", "--1"]))


def fault(draw):
    """True about one time in five: each kind of mistake is injected independently."""
    return draw(st.integers(0, 4)) == 0


@st.composite
def random_prompt(draw):
    """(spec, width, color): well-formed about a third of the time, else with one or more faults."""
    shape = draw(st.sampled_from(["box", "ellipse", "arrow", "scribble"]))
    n = 4 if shape != "scribble" else 2 * draw(st.integers(2, 6))
    if fault(draw):
        shape = draw(st.sampled_from(["Box", "line", "", "circle", "ARROW", " scribble "]))
    if fault(draw):
        n = draw(st.integers(0, 13))
    coords = [draw(in_image) for _ in range(n)]
    if coords and fault(draw):
        coords[draw(st.integers(0, n - 1))] = draw(bad_number)
    sep = ":" if not fault(draw) else draw(st.sampled_from(["", ";", "::", " "]))
    width = draw(st.none() | st.integers(1, 30)) if not fault(draw) else draw(
        st.one_of(st.integers(-2, 0), st.floats(allow_nan=True), st.just("5"), st.just(True)))
    color = draw(st.sampled_from(["red", "#00ff00", "#abc", "rgb(1,2,3)", (1, 2, 3)])) if not fault(draw) else \
        draw(st.sampled_from(["nope", "#12", 7, (1, 2), (256, 0, 0)]))
    return f"{shape}{sep}" + ",".join(str(c) for c in coords), width, color


def _draw_or_input_error(spec, **kw):
    im = canvas(size=(64, 48))
    raw = im.tobytes()
    try:
        out = draw_visual_prompt(im, spec, **kw)
    except InputError:
        return None
    assert im.tobytes() == raw and out.size == im.size
    return out


@settings(max_examples=EXAMPLES)
@given(st.text(max_size=60) | st.lists(_ALPHABET, max_size=25).map("".join))
def test_any_string_draws_or_raises_input_error(spec):
    _draw_or_input_error(spec)


@settings(max_examples=EXAMPLES)
@given(random_prompt())
def test_random_specs_draw_or_raise_input_error(prompt):
    spec, width, color = prompt
    out = _draw_or_input_error(spec, width=width, color=color)
    assert out is None or out.mode == "RGB"
