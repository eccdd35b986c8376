"""The default text encoder: all-MiniLM-L6-v2 sentence vectors (core/text_encoder.py), loaded lazily."""

from __future__ import annotations

from ganvas.core.hookspecs import hookimpl

NAME = "minilm"  # == core.text_encoder.MINILM_NAME; not imported so that listing plugins does not import torch


def _factory():
    from transformers.utils import logging as hf_logging

    from ganvas.core.text.encoder import get_text_encoder

    # The encoder is local; transformers' "Loading weights" bar would only clutter every CLI run.
    hf_logging.disable_progress_bar()

    return get_text_encoder(NAME)  # one shared instance per process: loading costs seconds


@hookimpl(trylast=True)
def ganvas_register_text_encoders(register):
    register(NAME, _factory)
