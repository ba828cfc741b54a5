"""Small matplotlib conventions shared by the report figures, so panels look alike everywhere."""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.axes import Axes
from matplotlib.figure import Figure


def epoch_panel(ax: Axes, title: str) -> None:
    """A panel of one quantity over epochs, titled by what it shows."""
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.3)


def finish_row(fig: Figure, axes: Sequence[Axes], ylabel: str) -> Figure:
    """A row of panels sharing a y quantity: label on the first, legend on the last."""
    axes[0].set_ylabel(ylabel)
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    return fig
