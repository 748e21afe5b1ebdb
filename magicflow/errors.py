"""One exception type for bad input, so the command line can print it as one clear line."""

from __future__ import annotations


class InputError(ValueError):
    """Bad user input (config, files, labels). The message names the culprit and what was expected."""
