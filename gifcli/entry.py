"""The ``gif`` executable's entry point.

Loading the command line imports torch and the rest (a second or more); a Ctrl-C in that time is
still one line and exit 130, and nothing has been written yet. Only the standard library is
imported before the try.
"""
import sys


def main() -> None:
    try:
        from .cli import main as cli_main
    except KeyboardInterrupt:
        sys.stderr.write("interrupted (while gif was starting; no output file was written)\n")
        sys.exit(130)
    cli_main()
