"""Tensor <-> PIL conversion, labelled sample grids and a dependency-free loss plot."""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """(N, 3, H, W) floats in [-1, 1] -> RGB PIL images; (N, 4, H, W) premultiplied RGBA -> straight RGBA."""
    x = (images.detach().float().cpu().clamp(-1, 1) + 1) / 2
    if x.shape[1] == 4:
        x = unpremultiply(x)
    arr = (x * 255).round().to(torch.uint8)
    return [Image.fromarray(a) for a in arr.permute(0, 2, 3, 1).numpy()]


def unpremultiply(x: torch.Tensor) -> torch.Tensor:
    """(N, 4, H, W) premultiplied RGBA in [0, 1] -> straight alpha (PNG's convention); RGB is 0 where alpha is 0.
    The network works premultiplied so that fully transparent pixels have one value (0) to learn."""
    alpha = x[:, 3:4]
    rgb = torch.where(alpha > 0, (x[:, :3] / alpha.clamp(min=1e-6)).clamp(0, 1), torch.zeros_like(x[:, :3]))
    return torch.cat([rgb, alpha], 1)


def from_uint8(images: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) uint8 (RGB, or premultiplied RGBA as the datasets hold it) -> floats in [-1, 1]."""
    return images.float() / 127.5 - 1


def on_white(images: torch.Tensor) -> torch.Tensor:
    """Network-space images in [-1, 1] -> RGB on a white background in [-1, 1] (RGB input passes through).
    Premultiplied RGBA composites as rgb + (1 - alpha): what an RGB instrument (the evaluator) sees."""
    if images.shape[1] != 4:
        return images
    x = (images.float() + 1) / 2
    return (x[:, :3] + (1 - x[:, 3:4])) * 2 - 1


def caption_grid(rows: list[list[Image.Image]], captions: list[str], label_width: int = 260) -> Image.Image:
    """One row per caption, the caption printed on the left, so a grid is readable without a side file."""
    cell = rows[0][0].size[0]
    pad = 2
    cols = max(len(r) for r in rows)
    height = len(rows) * (cell + pad) + pad
    sheet = Image.new("RGB", (label_width + cols * (cell + pad) + pad, height), (40, 40, 40))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for r, (row, text) in enumerate(zip(rows, captions)):
        y = pad + r * (cell + pad)
        draw.text((4, y + max(0, cell // 2 - 6)), _ellipsize(text, label_width // 6), fill=(230, 230, 230), font=font)
        for c, im in enumerate(row):
            sheet.paste(flatten(im), (label_width + pad + c * (cell + pad), y))
    return sheet


def checkerboard(size: tuple[int, int], square: int = 8) -> Image.Image:
    """The usual transparency backdrop: light and mid grey squares."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    light = ((yy // square + xx // square) % 2 == 0)[..., None]
    return Image.fromarray(np.where(light, 204, 153).astype(np.uint8).repeat(3, axis=2))


def flatten(im: Image.Image) -> Image.Image:
    """RGB for a sheet: transparent images are shown on a checkerboard so their alpha is visible."""
    if im.mode != "RGBA":
        return im.convert("RGB")
    board = checkerboard(im.size, max(2, im.size[0] // 8)).convert("RGBA")
    return Image.alpha_composite(board, im).convert("RGB")


def _ellipsize(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def plain_grid(images: list[Image.Image], cols: int | None = None) -> Image.Image:
    cols = cols or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    w, h = images[0].size
    sheet = Image.new("RGB", (cols * w, rows * h), (0, 0, 0))
    for i, im in enumerate(images):
        sheet.paste(flatten(im), ((i % cols) * w, (i // cols) * h))
    return sheet


def loss_plot(series: dict[str, list[tuple[float, float]]], size=(640, 320)) -> Image.Image:
    """Draw (x, y) series as lines with a legend. matplotlib would be a heavy dependency for one chart."""
    width, height = size
    margin = 40
    im = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(im)
    points = [p for s in series.values() for p in s if np.isfinite(p[1])]
    if not points:
        return im
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs) or 1
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y1 = y0 + 1

    def at(x, y):
        return (
            margin + (x - x0) / (x1 - x0) * (width - 2 * margin),
            height - margin - (y - y0) / (y1 - y0) * (height - 2 * margin),
        )

    draw.rectangle([margin, margin, width - margin, height - margin], outline=(180, 180, 180))
    font = ImageFont.load_default()
    draw.text((4, margin - 12), f"{y1:.3g}", fill=(0, 0, 0), font=font)
    draw.text((4, height - margin - 4), f"{y0:.3g}", fill=(0, 0, 0), font=font)
    draw.text((margin, height - margin + 6), f"step {x0:.0f}", fill=(0, 0, 0), font=font)
    draw.text((width - margin - 70, height - margin + 6), f"step {x1:.0f}", fill=(0, 0, 0), font=font)
    palette = [(200, 40, 40), (40, 80, 220), (40, 160, 60), (150, 60, 200), (230, 140, 20)]
    for i, (name, pts) in enumerate(series.items()):
        colour = palette[i % len(palette)]
        line = [at(x, y) for x, y in pts if np.isfinite(y)]
        if len(line) > 1:
            draw.line(line, fill=colour, width=2)
        draw.text((margin + 8 + 90 * i, 8), name, fill=colour, font=font)
    return im
