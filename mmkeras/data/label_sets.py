"""Label sets: a multilabel manifest's label cell lists any number of labels, separated by `|`.

The manifest format's own rule, so it sits with the manifest: training
(`tasks.multilabel`), evaluation and the TF-free runtime's bundle comparison
read the cells the same way.

Example:
>>> split_labels("red| ring |")
['red', 'ring']
>>> multi_hot(["red|ring", "blue"], ["blue", "red", "ring"]).tolist()
[[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]]
"""

import numpy as np

from mmkeras.errors import UserError

LABEL_SEPARATOR = "|"


def split_labels(cell: str) -> list[str]:
    """The labels of one multi-label cell (`red|ring`), blanks dropped."""
    return [label.strip() for label in cell.split(LABEL_SEPARATOR) if label.strip()]


def multi_hot(cells: list[str], labels: list[str]) -> np.ndarray:
    """[len(cells), len(labels)] 0/1: which of `labels` each cell lists."""
    index = {label: position for position, label in enumerate(labels)}
    table = np.zeros((len(cells), len(labels)), np.float32)
    for row, cell in enumerate(cells):
        for label in split_labels(cell):
            table[row, index[label]] = 1.0
    return table


def checked_label_cells(manifest, labels: list[str]) -> list[str]:
    """The rows' label cells; the first row without a label, or listing one not in `labels`, is refused.

    Args:
        manifest: a read manifest (`read_manifest`); errors name a row where `Manifest.where` says.
        labels: the labels of the run or bundle.

    Raises:
        UserError: naming the file and the row.
    """
    known, cells = set(labels), []
    for row in manifest.rows:
        if row.label is None:
            raise UserError("the row has no label", *manifest.where(row))
        unknown = [label for label in split_labels(row.label) if label not in known]
        if unknown:
            raise UserError(f"unknown label(s) {', '.join(unknown)}", *manifest.where(row))
        cells.append(row.label)
    return cells
