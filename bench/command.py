"""The command line a benchmark prints beside its figures, so that a reader can run it again."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence


def command_line(script: str, argv: Sequence[str] | None = None) -> str:
    """``python bench/<script> <arguments>``: ``argv`` as given, else this process's, shell-quoted."""
    args = list(sys.argv[1:] if argv is None else argv)
    return " ".join(["python", f"bench/{script}", *map(shlex.quote, args)])
