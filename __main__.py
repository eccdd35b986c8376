"""`python -m ganvas ...`: the command line (what the Krita installer records, independent of module layout)."""

from ganvas.core.hosts.cli.main import main

main()
