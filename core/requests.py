"""What every host hands the pipeline (GenerationRequest) and what it gets back (GenerationResult).

Adapters (CLI, HTTP server, hot folder, ComfyUI, Krita) translate their input into one request and
the result back into their format; nothing else crosses that boundary. The errors a request can raise
live in core/errors.py (re-exported here: plugins written for 0.1 import RequestRefused from this module).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ganvas.core.errors import GanvasError, InvalidRequest, ModelNotFound, RequestRefused, one_line  # noqa: F401

if TYPE_CHECKING:  # keep `import ganvas.core.requests` free of Pillow/torch for light hosts
    from pathlib import Path

    from PIL import Image

# The model a bare `ganvas generate` uses (env GANVAS_MODEL overrides it).
DEFAULT_MODEL = "emoji64"  # models/emoji64: 64 px emoji from English captions (models/shapes ships too)
DEFAULT_TRUNCATION = 1.0
MAX_SEED = 2**53 - 1  # JSON-safe in every host language (JavaScript numbers included)
MIN_SIZE, MAX_SIZE = 8, 2048  # a requested output side outside this is a mistake, not a resize


def default_model_name() -> str:
    import os

    return os.environ.get("GANVAS_MODEL") or DEFAULT_MODEL


@dataclass
class GenerationRequest:
    """One generation job, host-independent.

    prompt      text to draw.
    n           number of images; image i uses seed + i.
    seed        first seed; None lets the pipeline pick one (recorded in the result and metadata).
    truncation  psi in (0, 1]: noise is scaled by psi; lower = more typical, less varied.
    model       registered model name or checkpoint folder; None = the default model.
    style       style word, put into the prompt by the model's prompt template (config.json
                "prompt_template"; emoji64: "{prompt}; {style} style", how its captions end). A model without
                a template refuses a style (InvalidRequest, param "style"); blank means no style.
    size        requested output side in pixels; None = the model's native resolution. Anything else
                is a Lanczos resize (or a plugin's upsampler), never passed off as native.
    host        which adapter made the request ("cli", "http", "watch", "comfyui", "python").
    extra       free-form options for plugins (e.g. {"grayscale": True}); JSON-serialisable values.
    """

    prompt: str
    n: int = 1
    seed: int | None = None
    truncation: float = DEFAULT_TRUNCATION
    model: str | None = None
    style: str | None = None
    size: int | None = None
    host: str = "python"
    extra: dict[str, Any] = field(default_factory=dict)

    def replace(self, **changes) -> "GenerationRequest":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GenerationRequest":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidRequest(f"unknown request fields {unknown}; known: {sorted(known)}", param=unknown[0])
        return cls(**data)

    def validate(self) -> None:
        """Type and range checks every host needs; policy limits (length, n) belong to request_policy."""
        if not isinstance(self.prompt, str):
            raise InvalidRequest(f"prompt must be text, got {type(self.prompt).__name__}", "prompt")
        if not self.prompt.strip():
            raise InvalidRequest("prompt is empty", "prompt")
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise InvalidRequest(f"n must be a positive integer, got {self.n!r}", "n")
        if self.seed is not None:
            if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED:
                raise InvalidRequest(f"seed must be an integer in 0..{MAX_SEED}, got {self.seed!r}", "seed")
        if (
            isinstance(self.truncation, bool)
            or not isinstance(self.truncation, (int, float))
            or not 0 < self.truncation <= 1
        ):
            raise InvalidRequest(f"truncation must be in (0, 1], got {self.truncation!r}", "truncation")
        if self.size is not None:
            if isinstance(self.size, bool) or not isinstance(self.size, int) or not MIN_SIZE <= self.size <= MAX_SIZE:
                raise InvalidRequest(f"size must be an integer in {MIN_SIZE}..{MAX_SIZE}, got {self.size!r}", "size")
        if self.style is not None and not isinstance(self.style, str):
            raise InvalidRequest(f"style must be text, got {type(self.style).__name__}", "style")
        if not isinstance(self.extra, dict):
            raise InvalidRequest("extra must be a mapping", "extra")


@dataclass(frozen=True)
class ModelInfo:
    """What a result records about the model that made it."""

    name: str
    hash: str  # first 10 hex digits of sha256 (A1111/Civitai "AutoV2" short hash)
    resolution: int
    z_dim: int
    text_encoder: str
    path: str | None = None  # checkpoint folder, None for models built by a plugin loader
    styles: tuple[str, ...] = ()  # style words the training captions used (emoji64: "noto", ...); may be empty
    channels: int = 3  # 3: RGB images; 4: RGBA with a transparent background (straight alpha)
    prompt_template: str | None = None  # how a style word enters the prompt (config.json); None: no styles

    def styled_prompt(self, prompt: str, style: str | None) -> str:
        """The prompt with `style` put in by this model's prompt template; a blank style leaves it unchanged.
        InvalidRequest (param "style") when the model has no template."""
        if style is None or not style.strip():
            return prompt
        if self.prompt_template is None:
            raise InvalidRequest(
                f"style {style.strip()!r}: model {self.name!r} has no prompt template, so it takes "
                f"no style word (its config.json sets no \"prompt_template\"); leave the style "
                f"empty",
                "style",
            )
        return fill_prompt_template(self.prompt_template, prompt, style)


def _template_parts(template: str) -> list[tuple[str, str | None]]:
    """[(literal text, field name or None)] of a prompt template; ValueError unless it is well formed: the
    fields are {prompt} (exactly once) and {style} (at least once), without format specs or conversions."""
    import string

    if not isinstance(template, str):
        raise ValueError(f"prompt_template must be text, got {type(template).__name__}")
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"prompt_template {template!r} is not a valid template ({exc})") from None
    names = [name for _, name, _, _ in parts if name is not None]
    if (
        names.count("prompt") != 1
        or "style" not in names
        or set(names) - {"prompt", "style"}
        or any(spec or conversion for _, name, spec, conversion in parts if name is not None)
    ):
        raise ValueError(
            f"prompt_template {template!r} must contain {{prompt}} once and {{style}}, and no other "
            f"fields (e.g. \"{{prompt}}; {{style}} style\")"
        )
    return [(literal, name) for literal, name, _, _ in parts]


def prompt_template(config: dict) -> str | None:
    """A checkpoint config.json's "prompt_template" (how a style word enters the prompt, e.g.
    "{prompt}; {style} style"); None when absent. ValueError when malformed."""
    template = config.get("prompt_template") if isinstance(config, dict) else None
    if template is None:
        return None
    _template_parts(template)
    return template


def fill_prompt_template(template: str, prompt: str, style: str) -> str:
    """template with {prompt} and {style} (stripped) filled in. Idempotent: a prompt that already has the
    template's text around it (a replayed request, or "fox; noto style" typed with style noto) is kept."""
    before, after, seen = [], [], False
    for literal, name in _template_parts(template):
        (after if seen else before).append(literal)
        if name == "prompt":
            seen = True
        elif name == "style":
            (after if seen else before).append(style.strip())
    head, tail = "".join(before), "".join(after)
    if prompt.startswith(head) and prompt.endswith(tail) and len(prompt) >= len(head) + len(tail):
        return prompt
    return head + prompt + tail


def trained_styles(config: dict) -> tuple[str, ...]:
    """The style words a checkpoint's config.json records (`trained.styles`); () when absent or malformed."""
    trained = config.get("trained") if isinstance(config, dict) else None
    styles = trained.get("styles") if isinstance(trained, dict) else None
    return tuple(s for s in styles if isinstance(s, str)) if isinstance(styles, list) else ()


@dataclass
class GenerationResult:
    """Images plus everything needed to explain and reproduce them.

    images          RGB PIL images, PNG text fields attached in `.info` (write them with `save`).
    seeds           per-image seed: seeds[i] == request.seed + i (interpolation: the key frame's seed).
    request         the request as generated (after `ganvas_prepare_request`, seed filled in).
    input_request   the request as the host gave it, seed filled in: replaying it reproduces the images.
    timings         seconds per stage: prepare, check, encode, generate, postprocess, metadata, total.
    model           ModelInfo of the generator.
    metadata        per-image PNG text fields (also in images[i].info).
    warnings        plugin failures that were skipped ("plugin x failed in ganvas_y: ...").
    frames          interpolation only: per frame {"index", "t", "prompts": [a, b], "seeds": [a, b]}.
    """

    images: list["Image.Image"]
    seeds: list[int]
    request: GenerationRequest
    input_request: GenerationRequest
    timings: dict[str, float]
    model: ModelInfo
    metadata: list[dict[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    frames: list[dict[str, Any]] | None = None

    def save(self, folder: "str | Path", stem: str | None = None) -> list["Path"]:
        """Write each image as <stem>-seed<N>.png (frames: <stem>-frame<K>.png) without overwriting."""
        from ganvas.core.io.png import save_result

        return save_result(self, folder, stem)
