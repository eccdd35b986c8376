"""Built-in plugin: adds `ganvas watch` (the hot folder, core/watch/) to the command line."""
from __future__ import annotations

from ganvas.core.hookspecs import hookimpl


@hookimpl(trylast=True)
def ganvas_register_commands(cli):
    from ganvas.core.hosts.watch.cli import watch_command

    if "watch" not in cli.commands:  # an installed plugin's own `watch` wins
        cli.add_command(watch_command)
