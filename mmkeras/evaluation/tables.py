"""Plain-text tables of figures for the terminal (`mmkeras cv`, `mmkeras compare`)."""


def text_table(header: list[str], rows: list[list]) -> str:
    """Columns padded to their widest cell; floats with 4 decimals, `None` as `-`.

    Example:
    >>> print(text_table(["run", "accuracy"], [["concat", 0.91234], ["gated", None]]))
    run     accuracy
    concat  0.9123
    gated   -
    """
    cells = [header] + [[format_cell(value) for value in row] for row in rows]
    widths = [max(len(row[column]) for row in cells) for column in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in cells)


def format_cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def summary_table(summary: dict, *, title: str) -> str:
    """`{figure: {"mean", "std"}}` as a table under `title`."""
    rows = [[name, f"{values['mean']:.4f} ± {values['std']:.4f}"] for name, values in summary.items()]
    return title + "\n" + text_table(["figure", "mean ± std"], rows)
