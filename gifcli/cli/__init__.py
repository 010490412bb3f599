"""The gif command line (Typer). ``gif`` runs :func:`main`."""
from . import commands, more  # noqa: F401  (register the commands)
from .app import app, main

__all__ = ["app", "main"]
