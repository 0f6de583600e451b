"""The error every layer of the project raises for bad user input.

Library code raises :class:`UserError` (or a subclass naming the kind of input); only
``main.py`` turns it into one line on stderr and exit code 2.
"""


class UserError(Exception):
    """Bad input the user can fix (a file, a value, a flag). The message is one line."""
