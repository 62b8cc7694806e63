"""Progress reports that suit where the code runs.

* in a notebook: a tqdm widget bar (``tqdm.auto``), plus one printed line per epoch;
* in a terminal: a tqdm text bar, with the per-epoch lines written above it;
* in a log file or CI (stderr is not a terminal): only the per-epoch lines, so the log
  holds no carriage-return spam.

Example:
    >>> bar = Progress(total=10, desc="training", enabled=False)
    >>> bar.update(); bar.line("epoch 1/1 ..."); bar.close()
"""
from __future__ import annotations

import sys

__all__ = ["Progress", "progress_mode", "say"]


def _in_notebook() -> bool:
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    shell = ipython.get_ipython()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def progress_mode(enabled: bool = True) -> str:
    """``"off"``, ``"notebook"``, ``"bar"`` (a terminal) or ``"lines"`` (a log: no bar at all)."""
    if not enabled:
        return "off"
    if _in_notebook():
        return "notebook"
    stream = sys.stderr
    if stream is not None and hasattr(stream, "isatty") and stream.isatty():
        return "bar"
    return "lines"


class Progress:
    """A step counter with a bar where one makes sense, and plain lines everywhere."""

    def __init__(self, total: int, desc: str = "", enabled: bool = True, unit: str = "batch"):
        self.mode = progress_mode(enabled)
        self.bar = None
        if self.mode == "notebook":
            from tqdm.notebook import tqdm

            self.bar = tqdm(total=total, desc=desc, unit=unit, leave=True)
        elif self.mode == "bar":
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit=unit, leave=True, dynamic_ncols=True)

    def update(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def describe(self, desc: str, **postfix) -> None:
        """Change the bar's description and the values shown after it."""
        if self.bar is not None:
            self.bar.set_description(desc, refresh=False)
            if postfix:
                self.bar.set_postfix(postfix, refresh=False)
            self.bar.refresh()

    def line(self, text: str) -> None:
        """A line that stays in the output (above the bar in a terminal)."""
        if self.mode == "off":
            return
        if self.mode == "bar":
            self.bar.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def say(text: str, enabled: bool = True) -> None:
    """Print one line (through tqdm in a terminal, so it does not break a bar)."""
    mode = progress_mode(enabled)
    if mode == "bar":
        from tqdm import tqdm

        tqdm.write(text)
    elif mode != "off":
        print(text, flush=True)
