"""Old home of the command line, kept so `python -m ganvas.core.cli serve` (recorded by Krita plugins
installed before 0.2) still starts a server. New code: `python -m ganvas` or ganvas.core.hosts.cli.main."""

from ganvas.core.hosts.cli.main import main

if __name__ == "__main__":
    main()
