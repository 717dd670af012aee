"""The one exception the store raises for problems a user can cause or fix."""

from __future__ import annotations


class StoreError(Exception):
    """A store that cannot be opened, read or written, or a run that cannot be found.

    The message is one line that names the path or run and says what to do about it.
    """
