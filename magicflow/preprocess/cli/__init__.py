"""One module per ``magicflow`` preprocessing command, each with ``add_arguments`` and ``run``."""
