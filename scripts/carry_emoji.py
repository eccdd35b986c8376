"""Pack an RGBA imagefolder split and its caption embeddings small enough to travel to a GPU machine, and
unpack it there. The device tool carries at most 64 MiB with the working tree; emoji64a's train/ is 58 MB of
PNGs, so pixels travel as one xz-compressed array (colour zeroed where alpha is 0, which premultiplied
training never reads), metadata with the fields training reads, and embeddings as int8 with one scale per
vector (error ~1/250 of the largest component, far below the gap between two captions; inference always
uses exact vectors), rebuilt into the fp32 embedding cache on unpacking.

    python scripts/carry_emoji.py pack   ../shared/data/emoji64a carry      # here (MiniLM available)
    python scripts/carry_emoji.py unpack carry /tmp/emoji64a                 # there (no MiniLM, no PNGs)

No pickles: numpy arrays are read with allow_pickle=False, embeddings are safetensors.
"""

from __future__ import annotations

import io
import json
import lzma
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def _forms(row: dict) -> list[str]:
    from ganvas.core.datasets.folders import typed_prompt

    return [row["text"], typed_prompt(row["label"], row["style"]), row["label"]]


def pack(root: Path, carry: Path, split: str = "train"):
    from safetensors.torch import save_file

    from ganvas.core.text.encoder import MINILM_NAME, EmbeddingCache, caption_key, default_cache_dir

    folder = root / split
    rows = [
        json.loads(line)
        for line in (folder / "metadata.jsonl").read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    keep = ("file_name", "text", "label", "style", "codepoints")
    meta = "".join(json.dumps({k: r[k] for k in keep if k in r}, ensure_ascii=False) + "\n" for r in rows)
    arrays = []
    for r in rows:
        with Image.open(folder / r["file_name"]) as im:
            a = np.asarray(im.convert("RGBA")).copy()
        a[a[..., 3] == 0, :3] = 0
        arrays.append(a)
    out = carry / root.name / split
    out.mkdir(parents=True, exist_ok=True)
    (out / "metadata.jsonl").write_text(meta, encoding="utf-8")
    buffer = io.BytesIO()
    np.save(buffer, np.stack(arrays), allow_pickle=False)
    (out / "images.npy.xz").write_bytes(lzma.compress(buffer.getvalue(), preset=9 | lzma.PRESET_EXTREME))
    captions = sorted({c for r in rows for c in _forms(r)})
    vectors = EmbeddingCache(default_cache_dir()).lookup(captions, log=print)
    scale = vectors.abs().amax(1, keepdim=True).clamp(min=1e-8) / 127
    save_file(
        {"int8": (vectors / scale).round().to(torch.int8), "scale": scale.squeeze(1).contiguous()},
        str(carry / "embeddings.safetensors"),
        metadata={"keys": json.dumps([caption_key(MINILM_NAME, c) for c in captions])},
    )
    print(f"packed {len(rows)} images, {len(captions)} caption embeddings into {carry}")


def _write_png(args):
    path, array = args
    Image.fromarray(array).save(path)


def unpack(carry_split: Path, dest: Path):
    """carry/emoji64a/train -> dest/train/ as an imagefolder (PNGs + metadata.jsonl), and the embeddings into
    the cache that GANVAS_CACHE names."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from ganvas.core.text.encoder import MINILM_NAME, default_cache_dir

    packed = carry_split.parent.parent / "embeddings.safetensors"
    with safe_open(str(packed), "pt") as f:
        keys = json.loads(f.metadata()["keys"])
        vectors = f.get_tensor("int8").float() * f.get_tensor("scale")[:, None]
    cache = default_cache_dir() / f"{MINILM_NAME}.safetensors"
    cache.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in zip(keys, vectors)}, str(cache))
    out = dest / carry_split.name
    out.mkdir(parents=True, exist_ok=True)
    meta = (carry_split / "metadata.jsonl").read_text(encoding="utf-8")
    rows = [json.loads(line) for line in meta.splitlines() if line.strip()]
    images = np.load(io.BytesIO(lzma.decompress((carry_split / "images.npy.xz").read_bytes())), allow_pickle=False)
    with ProcessPoolExecutor(8) as pool:
        list(pool.map(_write_png, [(out / r["file_name"], images[i]) for i, r in enumerate(rows)], chunksize=256))
    (out / "metadata.jsonl").write_text(meta, encoding="utf-8")
    print(f"unpacked {len(rows)} images into {out}")


if __name__ == "__main__":
    verb, src, dst = sys.argv[1:4]
    if verb == "pack":
        pack(Path(src), Path(dst))
    elif verb == "unpack":
        unpack(Path(src), Path(dst))
    else:
        sys.exit(f"unknown verb {verb!r}: pack or unpack")
