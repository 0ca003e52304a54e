"""Item functions for the batch backends' tests, in a module that imports nothing heavy, so a
spawned worker starts in a fraction of a second."""

import os
import signal
from pathlib import Path


def double_or_die(item):
    """``2 * value``; the worker kills itself (SIGKILL) on the first try of an item marked "once"
    and on every try of one marked "always"; "raise" raises."""
    value, die, marker = item
    if die == "always" or (die == "once" and not Path(marker).exists()):
        Path(marker).touch()
        os.kill(os.getpid(), signal.SIGKILL)
    if die == "raise":
        raise ValueError(f"bad item {value}")
    return 2 * value
