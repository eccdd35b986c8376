"""Side-by-side sheet of the upsampler: test images (real 64 px input, Lanczos, ours, real 256 px) and the base
model's own 64 px images (input, Lanczos, ours), transparent pixels on a checkerboard.

    python scripts/upsampler_sheet.py --data runs/data/emoji256a --lr-data ../shared/data/emoji64a \\
        --out docs/upsampler-sheet.png [--upsampler upsampler-x4] [--rows 6] [--prompts "fox" "red apple" ...] \\
        [--also LABEL=FOLDER ...]

Test images are the first --rows of the split whose names sort after a fixed hash (deterministic, spread over
the designs); the low-res inputs are --lr-data's files when given, else Lanczos downsamples of the 256 px ones.
`--also LABEL=FOLDER` adds a column per other upsampler folder (e.g. a candidate beside the shipped one),
after the --upsampler column.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

PROMPTS = ["fox", "red apple", "rocket", "smiling face with sunglasses", "pizza", "unicorn"]
STYLES = ["noto", "twemoji", "fluent-color", "fluent-flat", "emojione", "noto-v1"]


def cell(image: Image.Image, side: int) -> Image.Image:
    from ganvas.core.io.images import flatten

    if image.size[0] < side:  # a low-res input is shown with its real pixels (nearest), never smoothed
        image = image.resize((side, side), Image.NEAREST)
    return flatten(image)


def sheet(rows: list[list[Image.Image]], headers: list[str], labels: list[str], side: int = 256) -> Image.Image:
    pad, label_h, head_h = 6, 16, 22
    cols = max(len(r) for r in rows)
    width = pad + cols * (side + pad)
    height = head_h + len(rows) * (side + label_h + pad) + pad
    out = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(out)
    font = ImageFont.load_default()
    for c, text in enumerate(headers):
        draw.text((pad + c * (side + pad) + 4, 5), text, fill=(0, 0, 0), font=font)
    for r, (row, label) in enumerate(zip(rows, labels)):
        y = head_h + r * (side + label_h + pad)
        draw.text((pad + 4, y + 1), label, fill=(60, 60, 60), font=font)
        for c, image in enumerate(row):
            if image is not None:
                out.paste(cell(image, side), (pad + c * (side + pad), y + label_h))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="high-resolution dataset root (emoji256a or its mini)")
    parser.add_argument("--lr-data", help="low-resolution twin (emoji64a); default: Lanczos downsamples")
    parser.add_argument("--split", default="test")
    parser.add_argument("--upsampler", help="registered upsampler name or folder (default: automatic)")
    parser.add_argument("--model", help="base model for the generated rows (default: the default model)")
    parser.add_argument("--rows", type=int, default=6)
    parser.add_argument("--prompts", nargs="*", default=PROMPTS)
    parser.add_argument("--out", default="docs/upsampler-sheet.png")
    parser.add_argument(
        "--also", nargs="*", default=[], metavar="LABEL=FOLDER", help="more upsampler folders, one column each"
    )
    args = parser.parse_args(argv)

    from ganvas.core.pipeline import Pipeline, configure_threads
    from ganvas.core.training.upsampler import downsample, split_files
    from ganvas.core.upscaling import load, upscale_image

    configure_threads(1)
    pipe = Pipeline.load(args.model)
    pipe.upsampler_name = args.upsampler
    up = pipe.load_upsampler()
    also = []
    for spec in args.also:
        label, sep, folder = spec.rpartition("=")  # labels may hold "=" (w=0.02)
        if not sep or not Path(folder).is_dir():
            parser.error(f"--also expects LABEL=FOLDER with an upsampler folder, got {spec!r}")
        also.append((label, load(label, Path(folder))))
    data = Path(args.data)
    sub = "train" if args.split in ("train", "validation") else args.split  # validation: the hold-out of train/
    folder = data / sub
    names = sorted(split_files(data, args.split), key=lambda n: hashlib.sha256(n.encode()).hexdigest())[: args.rows]
    rows, labels = [], []
    for name in names:
        with Image.open(folder / name) as im:
            real = im.convert("RGBA")
        if args.lr_data:
            with Image.open(Path(args.lr_data) / sub / name) as im:
                small = im.convert("RGBA")
        else:
            small = downsample(real, real.size[0] // up.info.scale)
        rows.append(
            [
                small,
                small.resize(real.size, Image.LANCZOS),
                pipe.upscale(small),
                *(upscale_image(extra, small, 1) for _, extra in also),
                real,
            ]
        )
        labels.append(f"{args.split}: {name}")
    for i, prompt in enumerate(args.prompts):
        style = STYLES[i % len(STYLES)] if pipe.info.styles else None
        small = pipe(prompt, seed=i, style=style).images[0]
        big = pipe(prompt, seed=i, style=style, size=up.info.out_resolution).images[0]  # the pipeline's own path
        rows.append(
            [
                small,
                small.resize(big.size, Image.LANCZOS),
                big,
                *(upscale_image(extra, small, 1) for _, extra in also),
                None,
            ]
        )
        labels.append(f"generated by {pipe.name}: {prompt!r}" + (f", {style} style" if style else "") + f", seed {i}")
    headers = [
        "64 px input (pixels shown x4)",
        "Lanczos x4",
        f"ours: {up.info.name} x{up.info.scale}",
        *(label for label, _ in also),
        f"real 256 px ({args.split} rows only)",
    ]
    image = sheet(rows, headers, labels, up.info.out_resolution)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    image.save(args.out, optimize=True)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
