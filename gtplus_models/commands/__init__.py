"""Subcommands of the ``gtplus`` command line (see gtplus_models/cli.py)."""
