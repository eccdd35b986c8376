"""Built-in plugin: `ganvas krita install`, which puts the Krita docker plugin where Krita finds it."""
from __future__ import annotations

from pathlib import Path

import click

from ganvas.core.hookspecs import hookimpl


def _krita_group() -> click.Group:
    @click.group("krita")
    def krita():
        """The Krita docker plugin (krita_bridge/): install it, or pack it for Krita's importer."""

    @krita.command("install")
    @click.option("--resources", type=click.Path(file_okay=False, path_type=Path), default=None,
                  help="Krita's resources folder  [default: Krita's own, e.g. ~/.local/share/krita]")
    @click.option("--zip", "zip_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
                  help="write a zip for Tools > Scripts > Import Python Plugin from File instead "
                       "(add --resources to do both)")
    @click.option("--enable", is_flag=True,
                  help="also switch the plugin on in kritarc and point 'Start local server' at this Python "
                       "(close Krita first: it rewrites kritarc on exit)")
    @click.option("--kritarc", type=click.Path(dir_okay=False, path_type=Path), default=None,
                  help="kritarc to edit with --enable  [default: Krita's, e.g. ~/.config/kritarc]")
    def install(resources, zip_out, enable, kritarc):
        """Copy the docker plugin into Krita's resources folder and say how to switch it on.

        \b
        Examples:
          ganvas krita install                      # then enable it in Krita, restart
          ganvas krita install --enable             # enabled too (Krita closed)
          ganvas krita install --zip ganvas_krita.zip
        """
        from ganvas.krita_bridge import ENABLE_KEY, install as kinstall

        try:
            if zip_out is not None:
                out = kinstall.build_zip(zip_out)
                click.echo(f"wrote {out}")
                click.echo("In Krita: Tools > Scripts > Import Python Plugin from File..., choose this zip, "
                           "answer Yes to enable it, restart Krita.")
                if resources is None and not enable:
                    return
            kritarc = kritarc or kinstall.default_kritarc()
            target = kinstall.install(resources or kinstall.default_resources_dir(kritarc=kritarc))
            click.echo(f"installed the Krita plugin into {target}")
            command = kinstall.local_server_command()
            if enable:
                kinstall.enable(kritarc, command)
                click.echo(f"enabled it in {kritarc} ([python] {ENABLE_KEY}=true); "
                           f"'Start local server' runs: {command}")
                click.echo("Start Krita, then Settings > Dockers > ganvas.")
            else:
                click.echo("To enable it: Krita > Settings > Configure Krita > Python Plugin Manager > tick "
                           "'ganvas', restart Krita, then Settings > Dockers > ganvas.")
                click.echo(f"(or, with Krita closed: ganvas krita install --enable). For 'Start local server', put "
                           f"this under Server settings > Command: {command}")
        except kinstall.InstallError as exc:
            raise click.ClickException(str(exc)) from None

    return krita


@hookimpl(trylast=True)
def ganvas_register_commands(cli):
    if "krita" not in getattr(cli, "commands", {}):
        cli.add_command(_krita_group())


if __name__ == "__main__":  # `python -m ganvas.plugins.krita_command install` before it is registered
    _krita_group()(prog_name="ganvas krita")
