"""The one exception type for mistakes a user can fix.

The command line turns a `DcganError` into a single line on stderr and exit status 2;
anything else is a bug and keeps its traceback.
"""


class DcganError(Exception):
    """A user-facing error: bad input, a missing file, an unwritable folder."""
