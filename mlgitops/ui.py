"""What a person reads: progress for slow steps, tables, sentences (rich)."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator

from rich.console import Console

#: Progress, sentences and errors (stderr).
console = Console(stderr=True, highlight=False)
#: What a command answers: tables and listings (stdout, so they can be piped).
out = Console(highlight=False)


class Steps:
    """Announce slow steps one at a time with a spinner and their duration."""

    def __init__(self, title: str, *, quiet: bool = False) -> None:
        self.title = title
        self.quiet = quiet

    @contextlib.contextmanager
    def step(self, label: str) -> Iterator[None]:
        if self.quiet:
            yield
            return
        start = time.perf_counter()
        with console.status(f"[bold]{self.title}[/]: {label}…", spinner="dots"):
            yield
        console.print(f"  [green]✓[/] {label} [dim]({time.perf_counter() - start:.1f}s)[/]")


def interactive() -> bool:
    return sys.stderr.isatty()
