"""Which caption each training image is shown with, and which wrong caption D must reject.

Prompt forms (caption-segment dropout): an emoji is trained on its full caption, on the form the hosts send
(`name; style style`) and on its bare name, so what users type is what the model learned.

Matching-aware negatives: a random other caption only teaches D that a fox is not a rocket; a *style swap*
(the same concept's caption in another design) makes it read the style word, and a *concept swap* (another
concept in the same design) makes it read the name when the palette alone would do.
"""

from __future__ import annotations

import torch

from ganvas.core.datasets.folders import CAPTION_FORMS, CaptionedImages


def parse_mix(spec: str, kinds: tuple[str, ...], default: str) -> dict[str, float]:
    """ "full:0.5,typed:0.5" -> normalised weights; "" -> {default: 1}. Names an unknown kind or a bad weight."""
    if not spec or not spec.strip():
        return {default: 1.0}
    mix = {}
    for part in spec.split(","):
        name, _, weight = part.strip().partition(":")
        if name not in kinds:
            raise ValueError(f"unknown kind {name!r} in {spec!r}; choose from {', '.join(kinds)}")
        try:
            mix[name] = float(weight) if weight else 1.0
        except ValueError:
            raise ValueError(f"weight {weight!r} of {name!r} in {spec!r} is not a number") from None
        if not mix[name] >= 0:
            raise ValueError(f"weight of {name!r} in {spec!r} must be >= 0")
    total = sum(mix.values())
    if total <= 0:
        raise ValueError(f"{spec!r}: the weights add up to 0")
    return {k: v / total for k, v in mix.items()}


def _padded_groups(keys: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images grouped by key: (member table padded with -1, group size per image, group id per image)."""
    groups: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    ids = {k: g for g, k in enumerate(groups)}
    width = max(len(m) for m in groups.values())
    table = torch.full((len(groups), width), -1, dtype=torch.long)
    for k, members in groups.items():
        table[ids[k], : len(members)] = torch.tensor(members)
    group_of = torch.tensor([ids[k] for k in keys])
    sizes = torch.tensor([len(groups[k]) for k in keys])
    return table, sizes, group_of


class CaptionSampler:
    def __init__(self, data: CaptionedImages, forms: dict[str, float], negatives: dict[str, float], device):
        self.device = device
        has_forms = data.caption_forms is not None
        if not has_forms and set(forms) != {"full"}:
            raise ValueError("caption forms other than 'full' need per-image 'label' and 'style' metadata")
        if not has_forms and set(negatives) != {"random"}:
            raise ValueError("style/concept-swap negatives need per-image 'label' and 'style' metadata")
        self.forms = (data.caption_forms if has_forms else data.caption_index[:, None]).to(device)
        self.form_probs = torch.tensor([forms.get(f, 0.0) for f in CAPTION_FORMS[: self.forms.shape[1]]])
        self.neg_probs = torch.tensor([negatives.get(k, 0.0) for k in ("random", "style", "concept")])
        if has_forms:
            self.by_concept = [t.to(device) for t in _padded_groups(data.labels)]
            self.by_style = [t.to(device) for t in _padded_groups(data.image_styles)]

    def draw(self, idx: torch.Tensor, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Caption ids for images `idx` and for their negatives (equal ids = no usable negative)."""
        n = len(idx)
        form = torch.multinomial(self.form_probs, n, replacement=True, generator=rng).to(self.device)
        caps = self.forms[idx, form]
        mis = caps.roll(1)  # random: another image of the batch, in its own form
        if self.neg_probs[1:].sum() == 0:
            return caps, mis
        kind = torch.multinomial(self.neg_probs, n, replacement=True, generator=rng).to(self.device)
        pick = torch.rand(n, generator=rng).to(self.device)
        # A bare name carries no style word: its style swap is the other design's typed prompt.
        swap_form = torch.where(form == CAPTION_FORMS.index("name"), CAPTION_FORMS.index("typed"), form)
        for k, (table, sizes, group_of) in ((1, self.by_concept), (2, self.by_style)):
            other = table[group_of[idx], (pick * sizes[idx]).long().clamp(max=table.shape[1] - 1)]
            other_caps = self.forms[other, form if k == 2 else swap_form]
            # Drawing the image itself (or a group of one) leaves the random negative in place.
            use = (kind == k) & (other != idx)
            mis = torch.where(use, other_caps, mis)
        return caps, mis
