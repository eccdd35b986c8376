"""Built-in plugin: the hosts' commands on the `ganvas` command line.

Each command lives beside its host; this plugin only adds them:

  ganvas serve   core/hosts/server/command.py   the HTTP server (OpenAI Images API)
  ganvas watch   core/hosts/watch/cli.py        the hot folder
  ganvas comfy   comfy_nodes/installer.py       installs the ComfyUI node pack
  ganvas krita   krita_bridge/command.py        installs the Krita docker plugin

Their modules are imported inside the hook, when the command line asks for its commands, so loading the
plugin list (`ganvas plugins`, the server, the ComfyUI nodes) imports none of them. A command name that an
installed plugin already added is left to that plugin (third-party hooks run before the built-ins).
"""

from __future__ import annotations

from ganvas.core.hookspecs import hookimpl


def _serve():
    from ganvas.core.hosts.server.command import serve_command

    return serve_command()


def _watch():
    from ganvas.core.hosts.watch.cli import watch_command

    return watch_command


def _comfy():
    from ganvas.comfy_nodes.installer import make_comfy_group

    return make_comfy_group()


def _krita():
    from ganvas.krita_bridge.command import krita_group

    return krita_group()


COMMANDS = {"serve": _serve, "watch": _watch, "comfy": _comfy, "krita": _krita}  # name -> the click command


@hookimpl(trylast=True)
def ganvas_register_commands(cli):
    for name, make in COMMANDS.items():
        if name not in cli.commands:  # an installed plugin's own command of this name wins
            cli.add_command(make())
