"""The one exception a user can cause, and the close-match helper its messages use."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class HaloBenchError(Exception):
    """An error caused by the user's input (a path, a name, a file, a config).

    The CLI prints its message and exits non-zero without a traceback, so the
    message must say what went wrong and what to do about it.
    """


def unknown_name(kind: str, name: str, known: Iterable[str]) -> HaloBenchError:
    """Build the error for an unknown `name`, suggesting close matches from `known`."""
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    listing = ", ".join(known) if len(known) <= 40 else f"{len(known)} names"
    return HaloBenchError(f"unknown {kind} {name!r}.{hint} Known: {listing}.")
