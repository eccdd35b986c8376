"""Request and response bodies (pydantic): they validate input and generate the OpenAPI document.

Fields follow the OpenAI Images API (DALL-E 2 surface); `seed`, `truncation` and `style` are ganvas
extensions that the official SDK sends through `extra_body`. Unknown fields are refused by name, so
a typo ("seeds") is an error, not a silently ignored option. Types are strict: "2" is not a number.
"""

from __future__ import annotations

from typing import Annotated, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr, create_model

from ganvas.core.hosts.server.config import MAX_FRAMES, MAX_KEYS, MAX_N
from ganvas.core.hosts.server.validation import SIZE_PATTERN
from ganvas.core.requests import MAX_SEED

Seed = Annotated[StrictInt, Field(ge=0, le=MAX_SEED, description="first seed; image i uses seed + i")]
Truncation = Annotated[StrictFloat, Field(gt=0, le=1, description="noise scale psi in (0, 1]")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _common_fields(max_prompt_chars: int) -> dict:
    return {
        "model": (
            Optional[StrictStr],
            Field(
                None,
                max_length=200,
                description=(
                    "registered model name (GET /v1/models); dall-e-2 / dall-e-3 mean the server's default model"
                ),
            ),
        ),
        "size": (
            Optional[StrictStr],
            Field(
                None,
                pattern=SIZE_PATTERN,
                description=(
                    "square WxW output size, or auto (the model's native resolution, the default); larger sizes are "
                    "made by the model's upsampler (e.g. 64 -> 256 px), then Lanczos-resized to the exact side; smaller "
                    "ones are a Lanczos resize"
                ),
            ),
        ),
        "response_format": (
            Optional[Literal["url", "b64_json"]],
            Field(None, description=("url (default; served by this server for 60 minutes) or b64_json")),
        ),
        "user": (Optional[StrictStr], Field(None, max_length=256, description="end-user id, for the access log")),
        "truncation": (Optional[Truncation], None),
        "style": (
            Optional[StrictStr],
            Field(
                None,
                max_length=100,
                description=(
                    "ganvas style word, put into the prompt by the model's prompt template (emoji64: '<prompt>; <style> "
                    "style'); a model without one refuses a style"
                ),
            ),
        ),
    }


def make_generation_model(max_prompt_chars: int) -> type[BaseModel]:
    return create_model(
        "CreateImageRequest",
        __base__=_Strict,
        prompt=(StrictStr, Field(..., min_length=1, max_length=max_prompt_chars)),
        n=(Optional[StrictInt], Field(None, ge=1, le=MAX_N, description="number of images, 1-10 (default 1)")),
        seed=(Optional[Seed], None),
        quality=(
            Optional[Literal["standard", "auto", "hd", "low", "medium", "high"]],
            Field(None, description="accepted for compatibility; the model has one quality"),
        ),
        safety_identifier=(Optional[StrictStr], Field(None, max_length=256)),
        output_format=(Optional[Literal["png"]], Field(None, description="png only")),
        **_common_fields(max_prompt_chars),
    )


def make_interpolation_model(max_prompt_chars: int) -> type[BaseModel]:
    Prompt = Annotated[StrictStr, Field(min_length=1, max_length=max_prompt_chars)]
    return create_model(
        "CreateInterpolationRequest",
        __base__=_Strict,
        prompts=(
            list[Prompt],
            Field(
                ...,
                min_length=1,
                max_length=MAX_KEYS,
                description=("key-frame prompts; one prompt held constant when `seeds` gives the key frames"),
            ),
        ),
        steps=(
            Optional[StrictInt],
            Field(
                None,
                ge=1,
                le=MAX_FRAMES - 1,
                description=(f"frames between neighbouring key frames (default 8); total frames at most {MAX_FRAMES}"),
            ),
        ),
        seed=(Optional[Seed], None),
        seeds=(
            Optional[list[Seed]],
            Field(
                None,
                min_length=1,
                max_length=MAX_KEYS,
                description=("key-frame seeds (a noise walk); default: `seed` for every key frame"),
            ),
        ),
        **_common_fields(max_prompt_chars),
    )


class ImageData(BaseModel):
    b64_json: Optional[str] = None
    url: Optional[str] = None
    revised_prompt: Optional[str] = Field(None, description="the prompt as generated, when plugins changed it")
    seed: int = Field(description="ganvas: this image's seed (reproduces it with n=1)")


class FrameData(ImageData):
    index: int = Field(description="frame number in the whole morph")
    t: float = Field(description="position between its two key frames, 0..1")


class ImagesResponse(BaseModel):
    created: int
    data: list[ImageData]


class InterpolationResponse(BaseModel):
    created: int
    data: list[FrameData]


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    resolution: Optional[int] = Field(None, description="native side in pixels, once the model is loaded")
    styles: Optional[list[str]] = Field(
        None,
        description=(
            "ganvas extension: style words the model was trained with (for the `style` field), once it is loaded"
        ),
    )
    sizes: Optional[list[int]] = Field(
        None,
        description=(
            "ganvas extension: the square sides `size` is meant for, once the model is loaded: its native side, "
            "then the sides its upsampler makes (native x2, x4 for a x4 upsampler); only the native side when no "
            "upsampler is registered. Other sides up to the server's limit are Lanczos resizes of these"
        ),
    )


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Health(BaseModel):
    status: Literal["ok", "loading", "stopping", "failed"]
    model: Optional[str] = None
    queue: dict[str, int]
