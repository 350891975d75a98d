"""The one exception class for a user's mistake.

A `UserError` is raised where bad input is detected: a missing or unreadable file, a config
key or value that does not exist, a prompt word the prior does not know, an image the loader
cannot separate, a render size that cannot fit memory. The doors (CLI, batch, web) print it
as one line and exit with code 2 (the web page shows the line); anything else is a bug and
keeps its traceback (exit code 1, "internal error" in the web page with the log's path).

It subclasses ValueError so code that validates values reads naturally, but the doors catch
`UserError` only, never a bare ValueError: a ValueError from deep inside a run is a bug.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input, bad config, a missing file: what the user can fix. One line, exit code 2."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the user named does not exist (still a FileNotFoundError for callers
    that test for that)."""
