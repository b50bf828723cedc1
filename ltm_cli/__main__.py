"""`python -m ltm_cli` runs the CLI."""

from ltm_cli.cli import main

main()
