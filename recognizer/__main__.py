"""`python -m recognizer eval DIR` / `python -m recognizer recognize IMAGE...` (same as `waypost ...`)."""

from .cli import main

main(prog_name="python -m recognizer")
