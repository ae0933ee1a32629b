"""`MatchTask`: `--task match`, does the text fit the image (two labels: match/mismatch, 1/0 or true/false).

A classifier whose logits also see the scaled cosine similarity of the
text's and the image's embeddings in a shared space
(`mmkeras.models.builder.match_logits`); from an align run (`--init-from`)
those projections and the temperature start aligned
(docs/design.md#alignment-before-matching).

Example:
>>> match_label_index(["mismatch", "match"], "train.csv")
1
"""

import functools

from mmkeras.config import RunConfig
from mmkeras.errors import UserError
from mmkeras.tasks.classification import ClassificationTask

# The label pairs `--task match` accepts (lowercased), and the one of each that means a match.
MATCH_LABELS = ({"mismatch", "match"}, {"0", "1"}, {"false", "true"})
MATCHING = ("match", "1", "true")


class MatchTask(ClassificationTask):
    """A two-label classifier of whether the text fits the image, with a similarity head."""

    name = "match"

    def head(self, labels: list[str], config: RunConfig):
        """The match head (`match_logits`); the labels must be one of `MATCH_LABELS`."""
        match_index = match_label_index(labels, config.data)
        from mmkeras.models.builder import match_logits  # Keras: only training builds a head

        return functools.partial(match_logits, embedding_dim=config.embedding_dim, match_index=match_index)

    def aligned_layers(self, config: RunConfig) -> tuple[str, ...]:
        """From an align run, the projections and temperature the similarity head starts from."""
        if not config.init_from:
            return ()
        from mmkeras.models.embedding_heads import ALIGNED_LAYERS  # a Keras module: only training asks

        return ALIGNED_LAYERS


def match_label_index(labels: list[str], path) -> int:
    """The index of the `match` label among the two of `--task match` (match/mismatch, 1/0 or true/false)."""
    lowered = [label.lower() for label in labels]
    if set(lowered) not in MATCH_LABELS:
        raise UserError(
            f"--task match needs the labels match/mismatch, 1/0 or true/false, found {', '.join(labels)}", path=path
        )
    return next(index for index, label in enumerate(lowered) if label in MATCHING)
