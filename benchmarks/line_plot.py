"""A dependency-free line plot (PIL only) for the study's curves."""

from PIL import Image, ImageDraw

COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (23, 190, 207), (127, 127, 127), (188, 189, 34), (227, 119, 194)]


def line_plot(path, panels, width=420, height=300, x_label=None, columns=None):
    """Writes a PNG with one panel per `(title, {label: [y values]})`, in
    rows of `columns` panels (default: one row).

    Each series is drawn against its index (epoch or logging step), named by
    `x_label` under the panels. A label keeps its colour in every panel.
    """
    labels = []
    for _, series in panels:
        labels += [label for label in series if label not in labels]
    colours = {label: COLOURS[i % len(COLOURS)] for i, label in enumerate(labels)}
    margin = 44
    columns = columns or len(panels)
    rows = -(-len(panels) // columns)
    image = Image.new("RGB", (width * min(columns, len(panels)), height * rows), "white")
    draw = ImageDraw.Draw(image)
    for p, (title, series) in enumerate(panels):
        x0, y0 = (p % columns) * width, (p // columns) * height
        values = [v for ys in series.values() for v in ys if v is not None]
        if not values:
            continue
        lo, hi = min(values), max(values)
        if hi - lo < 1e-9:
            lo, hi = lo - 0.5, hi + 0.5
        left, right, top, bottom = x0 + margin, x0 + width - 12, y0 + 28, y0 + height - 36
        draw.rectangle([left, top, right, bottom], outline=(0, 0, 0))
        draw.text((left, y0 + 8), title, fill=(0, 0, 0))
        draw.text((x0 + 4, top), f"{hi:.4g}", fill=(0, 0, 0))
        draw.text((x0 + 4, bottom - 10), f"{lo:.4g}", fill=(0, 0, 0))
        if x_label:
            draw.text((right - 6 * len(x_label), top - 14), x_label, fill=(90, 90, 90))
        for s, (label, ys) in enumerate(series.items()):
            colour = colours[label]
            points = [
                (left + (right - left) * i / max(len(ys) - 1, 1), bottom - (bottom - top) * (y - lo) / (hi - lo))
                for i, y in enumerate(ys)
                if y is not None
            ]
            if len(points) > 1:
                draw.line(points, fill=colour, width=2)
            elif points:
                draw.ellipse([points[0][0] - 2, points[0][1] - 2, points[0][0] + 2, points[0][1] + 2], fill=colour)
            draw.text((left + 6 + 110 * (s % 3), bottom + 6 + 12 * (s // 3)), label, fill=colour)
    image.save(path)
    return path
