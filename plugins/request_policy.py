"""Built-in plugin: refuse requests outside the request policy (limits and blocklist: core/policy.py)."""

from __future__ import annotations

from ganvas.core.errors import RequestRefused
from ganvas.core.hookspecs import hookimpl
from ganvas.core.policy import current_policy


@hookimpl(trylast=True)
def ganvas_check_request(request):
    try:
        policy = current_policy()
    except ValueError as exc:  # fail closed: a mistyped limit must not switch the policy off
        raise RequestRefused(f"the request policy is misconfigured: {exc}") from None
    policy.check(request)
