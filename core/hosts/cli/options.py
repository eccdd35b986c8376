"""Options that several `ganvas` commands share, declared once (generate, interpolate and eval take the
same --truncation, so a model is measured at exactly the setting users pick)."""

from __future__ import annotations

import click

from ganvas.core.requests import DEFAULT_TRUNCATION


def truncation_option(help: str = "psi: lower = more typical, less varied"):
    return click.option(
        "--truncation",
        type=click.FloatRange(0, 1, min_open=True),
        default=DEFAULT_TRUNCATION,
        show_default=True,
        help=help,
    )
