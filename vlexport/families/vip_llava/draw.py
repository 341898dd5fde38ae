"""VipLlava-style visual prompts drawn on an image with Pillow: ViP-LLaVA reads marks drawn straight
onto the pixels (a red box, an ellipse, an arrow, a scribble) and answers about the marked region.

    image = draw_visual_prompt(photo, "box:40,40,200,180")                       # a red box (a copy)
    image = draw_visual_prompt(photo, ["ellipse:10,10,90,60", "arrow:300,20,210,100"], color="#00ff00")

Specs (coordinates in pixels of the image, x to the right, y down; integers or decimals):

- `box:x0,y0,x1,y1`      the outline of the rectangle with those corners (drawn inward from its edges);
- `ellipse:x0,y0,x1,y1`  the outline of the ellipse inscribed in that rectangle;
- `arrow:x0,y0,x1,y1`    a line from (x0, y0) with a filled triangular head whose tip is (x1, y1);
- `scribble:x0,y0,x1,y1,...`  a polyline through two or more points, round joints.

Corners may come in either order. Every coordinate must lie within the image (0..width, 0..height,
the image's edges included); a box or ellipse needs an area, an arrow a length.
`parse_visual_prompt` checks a spec and raises `InputError` naming what is wrong (unknown shape,
number of coordinates, a non-number, a point outside the image, width <= 0); `draw_visual_prompt`
never raises anything else for a bad spec or colour.

Line width: `default_width(size)`, 1.5% of the image's shorter side, at least 2 px: about 5 px once
the processor has resized the short side to 336 (the ViP-LLaVA paper draws its prompts in varied
widths without a fixed rule; 5 px at the model's resolution is a thin, clearly visible line, a third
of a 14-px patch, and keeps most of the marked object visible). The arrow's head is 4 line widths
long (at least 8 px, at most half the arrow) and as wide as it is long.
Colours: any name or "#rrggbb" / "#rgb" / "rgb(r, g, b)" Pillow knows (`PIL.ImageColor`), or an (r, g, b)
tuple. Drawing is on an RGB copy (RGBA stays RGBA; other modes are converted to RGB first).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from PIL import Image, ImageColor, ImageDraw

from vlexport.errors import InputError

SHAPES = ("box", "ellipse", "arrow", "scribble")
_FIXED = {"box": 4, "ellipse": 4, "arrow": 4}
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
MAX_POINTS = 10_000  # a scribble's points at most (a spec is user text: bound the work)


@dataclass(frozen=True)
class VisualPrompt:
    """A parsed spec: the shape and its points ((x, y) pairs, in image pixels)."""

    shape: str
    points: tuple

    def spec(self) -> str:
        """The spec string this prompt reads back from."""
        return f"{self.shape}:" + ",".join("%d" % v if float(v).is_integer() else repr(float(v))
                                           for p in self.points for v in p)


def default_width(size) -> int:
    """The default line width for an image of size (width, height): 1.5% of the short side, >= 2 px."""
    return max(2, round(0.015 * min(size)))


def load_image(image, name: str = "image") -> Image.Image:
    """An image to draw on: a PIL image as it is, or a file path / bytes / numpy array decoded as RGB
    (EXIF orientation applied to files), with vlexport's input checks (InputError)."""
    if isinstance(image, Image.Image):
        return image
    from vlexport.processing.images import load_image as _load

    return _load(image, name)


def _check_width(width, what="width"):
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not math.isfinite(width):
        raise InputError(f"{what} must be a positive number of pixels, got {width!r}")
    if width <= 0:
        raise InputError(f"{what} must be > 0 pixels, got {width!r}")
    return max(1, int(round(width)))


def parse_visual_prompt(spec, image_size=None, *, width=None) -> VisualPrompt:
    """Check a spec ("box:40,40,200,180", ...; or a VisualPrompt) -> VisualPrompt. image_size (width,
    height): points must lie within it. width: checked to be > 0 when given."""
    if width is not None:
        _check_width(width)
    if isinstance(spec, VisualPrompt):
        spec = spec.spec()
    if not isinstance(spec, str):
        raise InputError(f"a visual prompt must be a string such as 'box:40,40,200,180', got {type(spec).__name__}")
    shape, sep, rest = spec.strip().partition(":")
    shape = shape.strip().lower()
    shown = spec if len(spec) <= 80 else spec[:77] + "..."
    if not sep or shape not in SHAPES:
        raise InputError(f"visual prompt {shown!r}: expected SHAPE:x0,y0,x1,y1,... with SHAPE one of "
                         f"{', '.join(SHAPES)}" + (f"; {shape!r} is not a known shape" if sep else ""))
    parts = [p.strip() for p in rest.split(",")]
    if len(parts) > 2 * MAX_POINTS:
        raise InputError(f"visual prompt {shown!r}: {len(parts)} coordinates, more than {2 * MAX_POINTS}")
    values = []
    for i, p in enumerate(parts):
        if not _NUMBER.match(p):
            raise InputError(f"visual prompt {shown!r}: coordinate {i + 1} ({p!r}) is not a number")
        v = float(p)
        if not math.isfinite(v):
            raise InputError(f"visual prompt {shown!r}: coordinate {i + 1} ({p!r}) is not a finite number")
        values.append(v)
    need = _FIXED.get(shape)
    if need is not None and len(values) != need:
        raise InputError(f"visual prompt {shown!r}: a {shape} takes 4 coordinates (x0,y0,x1,y1), got {len(values)}")
    if need is None and (len(values) < 4 or len(values) % 2):
        raise InputError(f"visual prompt {shown!r}: a scribble takes x,y pairs of two or more points "
                         f"(an even number >= 4 of coordinates), got {len(values)}")
    points = tuple(zip(values[0::2], values[1::2]))
    if image_size is not None:
        w, h = image_size
        for i, (x, y) in enumerate(points):
            if not (0 <= x <= w and 0 <= y <= h):
                raise InputError(f"visual prompt {shown!r}: point {i + 1} ({x:g}, {y:g}) lies outside the "
                                 f"{w}x{h} image (x in 0..{w}, y in 0..{h})")
    (x0, y0), (x1, y1) = points[0], points[-1]
    if shape in ("box", "ellipse") and (x0 == x1 or y0 == y1):
        raise InputError(f"visual prompt {shown!r}: a {shape} needs an area (x0 != x1 and y0 != y1)")
    if shape == "arrow" and (x0, y0) == (x1, y1):
        raise InputError(f"visual prompt {shown!r}: the arrow starts and ends at the same point")
    return VisualPrompt(shape, points)


def parse_color(color) -> tuple:
    """A colour name, "#rrggbb", "#rgb", "rgb(...)" or an (r, g, b) tuple -> (r, g, b)."""
    if isinstance(color, (tuple, list)):
        if len(color) == 3 and all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in color):
            return tuple(color)
        raise InputError(f"a colour tuple must be (r, g, b) with ints in 0..255, got {color!r}")
    if not isinstance(color, str):
        raise InputError(f"color must be a name such as 'red', '#rrggbb' or an (r, g, b) tuple, got "
                         f"{type(color).__name__}")
    try:
        rgb = ImageColor.getrgb(color.strip())
    except (ValueError, AttributeError):
        raise InputError(f"unknown colour {color!r}: use a name such as 'red' or '#rrggbb'") from None
    return tuple(rgb[:3])


def arrow_head(x0, y0, x1, y1, width: int) -> list:
    """The head triangle's three points (tip first) of an arrow from (x0, y0) to (x1, y1)."""
    length = math.hypot(x1 - x0, y1 - y0)
    head = min(max(4 * width, 8), length / 2) if length > 2 else length
    ux, uy = (x1 - x0) / length, (y1 - y0) / length
    bx, by = x1 - ux * head, y1 - uy * head
    half = head / 2
    return [(x1, y1), (bx - uy * half, by + ux * half), (bx + uy * half, by - ux * half)]


def _draw(d: ImageDraw.ImageDraw, p: VisualPrompt, fill, width: int):
    if p.shape in ("box", "ellipse"):
        (x0, y0), (x1, y1) = p.points
        box = [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]
        (d.rectangle if p.shape == "box" else d.ellipse)(box, outline=fill, width=width)
    elif p.shape == "arrow":
        (x0, y0), (x1, y1) = p.points
        tip, left, right = arrow_head(x0, y0, x1, y1, width)
        base = ((left[0] + right[0]) / 2, (left[1] + right[1]) / 2)  # the line stops inside the head
        d.line([(x0, y0), base], fill=fill, width=width)
        d.polygon([tip, left, right], fill=fill, outline=fill)
    else:
        pts = list(p.points)
        d.line(pts, fill=fill, width=width, joint="curve")
        r = width / 2
        if width > 2:  # round caps at both ends
            for x, y in (pts[0], pts[-1]):
                d.ellipse([x - r, y - r, x + r, y + r], fill=fill)


def draw_visual_prompt(image, spec, color="red", width=None) -> Image.Image:
    """A copy of `image` (PIL, array or path) with the visual prompt(s) drawn on it: one spec string
    (see the module docstring), a VisualPrompt, or a list of them. color: a name, "#rrggbb" or
    (r, g, b); width: line width in pixels (default `default_width(image.size)`). The input is not changed."""
    im = load_image(image)
    specs = list(spec) if isinstance(spec, (list, tuple)) else [spec]
    if not specs:
        raise InputError("no visual prompt given (an empty list)")
    w = default_width(im.size) if width is None else _check_width(width)
    w = min(w, max(im.size))  # wider draws the same (and Pillow's box outline loops once per pixel of width)
    prompts = [parse_visual_prompt(s, im.size) for s in specs]
    rgb = parse_color(color)
    out = im.copy() if im.mode in ("RGB", "RGBA") else im.convert("RGB")
    fill = rgb + (255,) if out.mode == "RGBA" else rgb
    d = ImageDraw.Draw(out)
    for p in prompts:
        _draw(d, p, fill, w)
    return out
