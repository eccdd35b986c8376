"""Inference-time levers on a trained model, measured with `ganvas eval`'s own report (issue 14's sweep).

    python scripts/conditioning_sweep.py MODE PSI [--model emoji64] [--split validation] [--evaluator DIR]

MODE  z    noise scaled by PSI (what `--truncation` does; the same as `ganvas eval --truncation PSI`)
      w    mapping output pulled toward the prompt's mean over 256 fixed noises (StyleGAN's truncation)
      wz   both
      amp  the standardised text vector multiplied by PSI (> 1: "stronger" conditioning)
Prints the report; nothing here is used by hosts. Results of 2026-11-30 are in the issue-14 note.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ganvas.core.evaluation import report
from ganvas.core.model.networks import noise

MEAN_SEEDS = range(10**9, 10**9 + 256)  # seeds no evaluation uses


def conditioned_generate(mode: str, psi: float):
    """A drop-in for report.generate_from_vectors that applies `mode` at strength `psi`."""

    @torch.no_grad()
    def generate(g, text_vectors, seeds, batch=256, truncation=1.0):
        bank = noise(g.config.z_dim, MEAN_SEEDS)
        out = []
        for i in range(0, len(seeds), batch):
            z = noise(g.config.z_dim, seeds[i : i + batch])
            t = g.normalize_text(text_vectors[i : i + batch])
            if mode == "amp":
                t = t * psi
            w = g.mapping(torch.cat([z * psi if mode == "z" else z, t], 1))
            if mode in ("w", "wz"):
                rows, inverse = torch.unique(t, dim=0, return_inverse=True)
                means = torch.stack([g.mapping(torch.cat([bank, r.expand(len(bank), -1)], 1)).mean(0) for r in rows])
                w = means[inverse] + psi * (w - means[inverse])
            if mode in ("z", "wz"):
                z = z * psi
            out.append(g.synthesize(torch.cat([w, z], 1)).float())
        return torch.cat(out)

    return generate


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["z", "w", "wz", "amp"])
    parser.add_argument("psi", type=float)
    parser.add_argument("--model", default="models/emoji64")
    parser.add_argument("--data", default="../shared/data/emoji64a")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--evaluator", default=None, help="evaluator folder (validation: one trained without it)")
    parser.add_argument("--json-out", default=None)
    args = parser.parse_args()
    report.generate_from_vectors = conditioned_generate(args.mode, args.psi)
    result, text = report.evaluate_dataset_model(
        args.model, Path(args.data), args.split, evaluator=args.evaluator, threads=1, log=lambda *a: None
    )
    print(f"mode {args.mode} psi {args.psi}\n{text}")
    if args.json_out:
        import json

        Path(args.json_out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
