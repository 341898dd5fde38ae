"""Stage-by-stage progress for long steps (export, simplify, validate, build, bench), on stderr.

A rich spinner/bar on a terminal; one plain line per stage otherwise (CI logs, pipes).
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager


def _peak_rss_mb() -> int:
    try:
        import resource

        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    except ImportError:  # not on Windows
        return -1


class Stages:
    def __init__(self, total: int, enabled: bool = True):
        self.total, self.n, self.enabled = total, 0, enabled
        self.timings: dict[str, float] = {}
        self.peak_mb: dict[str, int] = {}  # process peak RSS when each stage ended
        self._console = None
        if enabled:
            from rich.console import Console

            self._console = Console(stderr=True, soft_wrap=True)  # long notes stay one line in logs

    def note(self, message: str, style: str | None = None):
        """One indented line under the current stage. The text is printed as is (never read as rich
        markup, so "pip install 'vlexport[gpu]'" keeps its brackets); `style` colours it."""
        if self.enabled:
            from rich.text import Text

            self._console.print(Text("      " + message, style=style or ""), highlight=False)

    @contextmanager
    def stage(self, label: str, steps: int | None = None):
        """Yields advance(); prints '[i/n] label ... done in Xs'."""
        self.n += 1
        head = f"[{self.n}/{self.total}] {label}"
        start = time.perf_counter()
        if not self.enabled:
            yield lambda *a: None
            self.timings[label] = time.perf_counter() - start
            self.peak_mb[label] = _peak_rss_mb()
            return
        if self._console.is_terminal:
            from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            cols = [SpinnerColumn(), TextColumn(head)] + ([BarColumn(), TextColumn("{task.completed}/{task.total}")]
                                                         if steps else []) + [TimeElapsedColumn()]
            with Progress(*cols, console=self._console, transient=True) as bar:
                task = bar.add_task(label, total=steps)
                yield lambda k=1: bar.advance(task, k)
        else:
            print(f"{head} ...", file=sys.stderr, flush=True)
            yield lambda *a: None
        took = time.perf_counter() - start
        self.timings[label] = took
        self.peak_mb[label] = _peak_rss_mb()
        # the label holds user text (a model path such as 'models/vqa[gpu]'): never read it as markup,
        # which drops '[gpu]' and raises MarkupError on '[/]'
        from rich.text import Text

        took_text = f"({took:.1f}s, peak RSS {self.peak_mb[label]} MB)"
        line = Text.assemble(("✓", "green"), f" {head} ", (took_text, "dim"))
        self._console.print(line, highlight=False)
