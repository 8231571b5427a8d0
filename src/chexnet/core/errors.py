"""The base of every error that is the user's to fix (bad params, table, images or checkpoint).

Stages print these as one clear line and exit 1; anything else is a bug and keeps its traceback.
"""


class ChexnetError(Exception):
    """An input problem the message explains: which file, row or column, and what to do."""
