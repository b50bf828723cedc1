"""The service layer: plain functions over a Database. No Typer, no Rich, no print()."""
