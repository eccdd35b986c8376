"""GANVAS_CONDITIONING: what Encode Prompt and Mix Prompts hand to Generate.

A conditioning is a recipe the pipeline can run, not a raw vector: the prompt text (or two prompts and
a weight) plus the text encoder it was made for. Generate turns it back into a pipeline call, so
prompt plugins (style, policy checks, metadata) apply exactly as for a typed prompt.

A mix of prompts a and b with weight w is the pipeline's own interpolation frame between a and b at
t = w with one seed: the sentence vectors are slerped (they are unit vectors; a slerp keeps them on
the sphere the generator was trained on) and the noise stays that seed's noise. The pipeline places
frames at t = k/steps, so w is rounded to the nearest fraction with a denominator up to MIX_STEPS
(exact for multiples of 0.02, 0.05, 0.1, 0.25 and for 1/3); `weight` holds the value actually used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

# steps + 1 frames count towards the request policy's n limit (default 100) although only one is drawn
MIX_STEPS = 50


@dataclass(frozen=True)
class PromptConditioning:
    """prompts: one prompt, or the two prompts of a mix; weight: share of prompts[1] (0 for one prompt);
    text_encoder: the encoder name of the model that encoded it; vector: the (D,) sentence vector of
    the text as typed (informational: plugins such as `style` may still change the prompt)."""

    prompts: tuple[str, ...]
    text_encoder: str
    weight: Fraction = Fraction(0)
    vector: Any = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        if len(self.prompts) not in (1, 2) or not all(isinstance(p, str) for p in self.prompts):
            raise ValueError(f"a ganvas conditioning holds one or two prompts, got {self.prompts!r}")
        if not 0 <= self.weight <= 1:
            raise ValueError(f"mix weight must be in 0..1, got {float(self.weight)}")

    @property
    def is_mix(self) -> bool:
        return len(self.prompts) == 2

    @property
    def frame(self) -> tuple[int, int]:
        """(frame index, steps) of the pipeline interpolation frame that draws this mix."""
        return self.weight.numerator, self.weight.denominator

    def describe(self) -> str:
        if not self.is_mix:
            return self.prompts[0]
        return f"{self.prompts[0]!r} mixed with {self.prompts[1]!r} at {float(self.weight):.3f}"


def mix_weight(weight: float) -> Fraction:
    """The weight the pipeline can draw exactly: nearest k/steps with steps <= MIX_STEPS."""
    if isinstance(weight, bool) or not isinstance(weight, (int, float, Fraction)) or not 0 <= weight <= 1:
        raise ValueError(f"mix weight must be a number in 0..1, got {weight!r}")
    return Fraction(weight).limit_denominator(MIX_STEPS)


def mix(a: PromptConditioning, b: PromptConditioning, weight: float, vector: Any = None) -> PromptConditioning:
    """a and b mixed; weight 0 gives a, 1 gives b. Both must be single prompts of one text encoder."""
    for label, cond in (("conditioning_a", a), ("conditioning_b", b)):
        if not isinstance(cond, PromptConditioning):
            raise TypeError(
                f"{label} is {type(cond).__name__}, expected a ganvas conditioning (from Ganvas Encode Prompt)"
            )
        if cond.is_mix:
            raise ValueError(
                f"{label} is already a mix ({cond.describe()}); Ganvas Mix Prompts mixes two "
                f"single prompts (connect Ganvas Encode Prompt outputs)"
            )
    if a.text_encoder != b.text_encoder:
        raise ValueError(
            f"conditioning_a was encoded with {a.text_encoder!r} and conditioning_b with "
            f"{b.text_encoder!r}; mix prompts encoded for models with the same text encoder"
        )
    w = mix_weight(weight)
    if w == 0:
        return a
    if w == 1:
        return b
    return PromptConditioning((a.prompts[0], b.prompts[0]), a.text_encoder, w, vector)
