"""An interactive attention explorer (ipywidgets) that also leaves a static figure behind.

Notebooks must read fully without a live kernel (e.g. on GitHub), so :func:`attention_explorer` first draws the
default view as an ordinary matplotlib figure, then offers sliders for layer, head and decoding step that draw
the chosen view below them when a kernel is running.
"""

from __future__ import annotations

import matplotlib.pyplot as plt

from .figures import _np, on_grid, overlay


def draw_attention(visual, grid, image=None, *, step: int = 0, layer: int = 0,
                   head: int | None = None, tokens: list[str] | None = None, ax=None):
    """One heat map of the visual attention of (step, layer, head) over the image; ``head=None`` averages heads.

    visual: (steps, layers, heads, V) one batch row of a capture (``record.row(b).visual``).
    """
    data = _np(visual)[step, layer]
    data = data.mean(0) if head is None else data[head]
    p = data / max(float(data.sum()), 1e-12)
    if ax is None:
        _, ax = plt.subplots(figsize=(3.2, 3.2))
    heat, shape = on_grid(p, grid)
    artist = overlay(ax, heat, shape, image, vmin=0.0)
    if not getattr(ax, "_clva_colorbar", False):  # one colour bar per panel, also when sliders redraw it
        ax.figure.colorbar(artist, ax=ax, shrink=0.8, label="share per patch")
        ax._clva_colorbar = True
    token = f" ({tokens[step]!r})" if tokens and step < len(tokens) else ""
    ax.set_title(f"step {step}{token}, layer {layer}, {'mean of heads' if head is None else f'head {head}'}",
                 fontsize=8)
    ax.axis("off")
    return ax.figure


def attention_explorer(visual, grid, image=None, tokens: list[str] | None = None):
    """Draw the default view statically, then return sliders (layer, head, step) that draw the chosen view live.

    Returns the ipywidgets box, or ``None`` when ipywidgets is not installed (the static figure stays).
    """
    from IPython.display import display

    steps, layers, heads, _ = _np(visual).shape
    static = draw_attention(visual, grid, image, step=0, layer=layers - 1, tokens=tokens)
    display(static)
    plt.close(static)
    try:
        import ipywidgets as widgets
    except ImportError:
        return None
    layer = widgets.IntSlider(value=layers - 1, min=0, max=layers - 1, description="layer")
    head = widgets.Dropdown(options=[("mean", -1)] + [(str(h), h) for h in range(heads)], value=-1,
                            description="head")
    step = widgets.IntSlider(value=0, min=0, max=steps - 1, description="step")
    output = widgets.Output()

    def redraw(_=None):
        with output:
            output.clear_output(wait=True)
            fig = draw_attention(visual, grid, image, step=step.value, layer=layer.value,
                                 head=None if head.value < 0 else head.value, tokens=tokens)
            display(fig)
            plt.close(fig)

    for control in (layer, head, step):
        control.observe(redraw, names="value")
    # No first redraw into the Output widget while the cell runs: the static figure above is the default view, and
    # output captured by an Output widget during execution can leave a headless runner (nbclient, nbmake) waiting
    # for a message that never comes. Moving a slider draws the chosen view below the controls.
    return widgets.VBox([widgets.HBox([layer, head, step]), output])
