"""Figures the evaluators and ``harness report`` draw: matplotlib without a display, saved one way.

figure, axis = new_figure(figsize=(6, 4))
axis.plot(...)
save_figure(figure, run_dir / "analysis-x.png")
"""

from __future__ import annotations

from pathlib import Path


def new_figure(*args, **kwargs):
    """``matplotlib.pyplot.subplots(*args, **kwargs)`` on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def save_figure(figure, path: Path, dpi: int = 120) -> Path:
    """Lay out, write to ``path`` and free the figure."""
    import matplotlib.pyplot as plt

    try:
        figure.tight_layout()
        figure.savefig(path, dpi=dpi)
    finally:
        plt.close(figure)
    return Path(path)
