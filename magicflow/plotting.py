"""One way to get matplotlib: the file-only Agg backend, imported on first use (stages that
draw nothing never pay for it, and no stage ever needs a display)."""

from __future__ import annotations


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
