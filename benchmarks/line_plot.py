"""The studies' curves as a PNG of line-plot panels (matplotlib, the `plots` extra)."""


def line_plot(path, panels, width=420, height=300, x_label=None, columns=None):
    """Writes a PNG with one panel per `(title, {label: [y values]})`, in
    rows of `columns` panels (default: one row).

    Each series is drawn against its index (epoch or logging step), named by
    `x_label` under the panels; `None` values are gaps. A label keeps its
    colour in every panel. `width` and `height` are one panel's pixels.
    """
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError(
            "The study plots need matplotlib: pip install 'keras-ccmim[plots]' "
            "(tools/setup.sh installs it)."
        ) from error
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    labels = []
    for _, series in panels:
        labels += [label for label in series if label not in labels]
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colours = {label: cycle[i % len(cycle)] for i, label in enumerate(labels)}
    columns = min(columns or len(panels), len(panels))
    rows = -(-len(panels) // columns)
    dpi = 100
    figure, axes = plt.subplots(rows, columns, squeeze=False, dpi=dpi,
                                figsize=(width * columns / dpi, height * rows / dpi))
    for index, (title, series) in enumerate(panels):
        ax = axes[index // columns][index % columns]
        for label, ys in series.items():
            xs = [i for i, y in enumerate(ys) if y is not None]
            values = [y for y in ys if y is not None]
            ax.plot(xs, values, marker="o" if len(values) == 1 else None, markersize=3,
                    color=colours[label], label=label)
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=7)
        if x_label:
            ax.set_xlabel(x_label, fontsize=7)
        if series:
            ax.legend(fontsize=6)
    for index in range(len(panels), rows * columns):
        axes[index // columns][index % columns].axis("off")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path
