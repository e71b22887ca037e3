"""Writing a file so that it appears whole or not at all."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

# The process's umask, read once at import (reading it means setting it): temporary
# files are created private, and get the usual permissions before they are renamed.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def atomic_write(target: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """``write(tmp)`` to a temporary file beside ``target``, then rename it to ``target``.

    The temporary name keeps ``target``'s suffix (writers that choose the format by
    the suffix see the right one) and ends in ``.partial`` before it; it is removed
    if ``write`` fails, so no half-written file is ever left under either name.

    Returns
    -------
    Path
        ``target``.
    """
    target = Path(target)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{target.stem}.", suffix=f".partial{target.suffix}", dir=target.parent
    )
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, target)  # never a half-written file under the final name
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
