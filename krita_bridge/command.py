"""`ganvas krita install`, which puts the Krita docker plugin where Krita finds it (the installer is install.py).

Added to the CLI by the built-in plugin plugins/commands.py; also `python -m ganvas.krita_bridge.command install`.
"""

from __future__ import annotations

from pathlib import Path

import click


def krita_group() -> click.Group:
    """The `ganvas krita` click group."""

    @click.group("krita")
    def krita():
        """The Krita docker plugin (krita_bridge/): install it, or pack it for Krita's importer."""

    @krita.command("install")
    @click.option(
        "--resources",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Krita's resources folder  [default: Krita's own, e.g. ~/.local/share/krita]",
    )
    @click.option(
        "--zip",
        "zip_out",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="write a zip for Tools > Scripts > Import Python Plugin from File instead (add --resources to do both)",
    )
    @click.option(
        "--enable",
        is_flag=True,
        help="also switch the plugin on in kritarc, as Krita's Python Plugin Manager does "
        "(close Krita first: it rewrites kritarc on exit)",
    )
    @click.option(
        "--kritarc",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="kritarc to edit with --enable  [default: Krita's, e.g. ~/.config/kritarc]",
    )
    def install(resources, zip_out, enable, kritarc):
        """Copy the docker plugin into Krita's resources folder and say how to switch it on.

        It also records this Python's full path for the docker's "Start local server", so that works
        however Krita was started.

        \b
        Examples:
          ganvas krita install                      # then enable it in Krita, restart
          ganvas krita install --enable             # enabled too (Krita closed)
          ganvas krita install --zip ganvas_krita.zip
        """
        from ganvas.krita_bridge import ENABLE_KEY
        from ganvas.krita_bridge import install as kinstall

        command = kinstall.local_server_command()
        try:
            if zip_out is not None:
                out = kinstall.build_zip(zip_out)
                click.echo(f"wrote {out}")
                click.echo(
                    "In Krita: Tools > Scripts > Import Python Plugin from File..., choose this zip, "
                    "answer Yes to enable it, restart Krita."
                )
                if resources is None and not enable:
                    _warn_about_path()
                    return
            kritarc = kritarc or kinstall.default_kritarc()
            target = kinstall.install(resources or kinstall.default_resources_dir(kritarc=kritarc), command)
            click.echo(f"installed the Krita plugin into {target}")
            click.echo(f"'Start local server' in the docker runs: {command}")
            if enable:
                kinstall.enable(kritarc)
                click.echo(f"enabled it in {kritarc} ([python] {ENABLE_KEY}=true).")
                click.echo("Start Krita, then Settings > Dockers > ganvas.")
            else:
                click.echo(
                    "To enable it: in Krita, Settings > Configure Krita > Python Plugin Manager, tick "
                    "'ganvas', restart Krita, then Settings > Dockers > ganvas "
                    "(or, with Krita closed: ganvas krita install --enable)."
                )
            _warn_about_path()
        except kinstall.InstallError as exc:
            raise click.ClickException(str(exc)) from None

    def _warn_about_path():
        from ganvas.krita_bridge import install as kinstall

        venv = kinstall.venv_first_on_path()
        if venv:
            click.echo(
                f"Warning: this shell has the virtualenv {venv} first on PATH. Do not start Krita from it: "
                "Krita's Python would load that environment's packages, which lack PyQt5, and no Python "
                "plugin (ganvas included) would load. Start Krita from the desktop menu, or run "
                "'deactivate' first. The docker starts ganvas by its full path, so it does not need the "
                "venv on PATH.",
                err=True,
            )

    return krita


if __name__ == "__main__":  # `python -m ganvas.krita_bridge.command install`, without the plugin list
    krita_group()(prog_name="ganvas krita")
