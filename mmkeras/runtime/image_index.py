"""`ImageIndex`: exact cosine search over image embeddings, saved as a float16 matrix, without TensorFlow.

An index file (`.npz`) holds the unit-length embeddings of a folder's images
as float16 [N, D] (half the size of float32; cosine rankings barely move) and
their paths relative to the folder. Search is exact: one matrix-vector
product over every image and a partial sort, which measured well under the
50 ms budget for 100k images on one core (benchmarks/image_search.py), so no
approximate index is needed at that size.

`search_warnings` says when a search's results deserve no trust: the align
run behind the bundle never learned (its validation recall@1 near what a
random ranking gets), or the best image scores below the true pairs of the
validation set (the index may hold nothing that fits the text).

Example:
>>> index = build_index(Embedder("bundles/align"), "photos/")        # doctest: +SKIP
>>> index.save("photos.npz")                                        # doctest: +SKIP
>>> ImageIndex.load("photos.npz").search(query_embedding, top_k=3)  # doctest: +SKIP
[('beach/003.jpg', 0.71), ('beach/017.jpg', 0.69), ('dunes.png', 0.52)]
"""

from pathlib import Path

import numpy as np

from mmkeras.errors import UserError
from mmkeras.preprocessing.image import IMAGE_SUFFIXES
from mmkeras.progress import step_progress

EMBED_CHUNK = 64
# "Near chance": a validation recall@1 less than this share of the way from chance to perfect.
LEARNED_SHARE = 0.1


class ImageIndex:
    """Unit-length image embeddings and the images' paths, searchable by a query embedding.

    Args:
        embeddings: [N, D] unit-length embeddings (stored as float16).
        paths: the N images' paths (relative to the indexed folder).
        root: the indexed folder.
    """

    def __init__(self, embeddings: np.ndarray, paths: list[str], root: str):
        self.embeddings = np.asarray(embeddings, np.float16)
        self.paths = list(paths)
        self.root = root
        # Searched in float32: NumPy has no BLAS kernel for float16, and one conversion at load is cheaper
        # than one per query.
        self._search_matrix = self.embeddings.astype(np.float32)

    def search(self, query: np.ndarray, top_k: int = 5) -> list[tuple[str, float]]:
        """The `top_k` images most similar to a unit-length query embedding [D], best first."""
        scores = self._search_matrix @ np.asarray(query, np.float32)
        top_k = min(top_k, len(scores))
        best = np.argpartition(-scores, top_k - 1)[:top_k]
        best = best[np.argsort(-scores[best])]
        return [(self.paths[index], float(scores[index])) for index in best]

    def save(self, path: str | Path):
        """Write the index file (`.npz`; the name is kept as given)."""
        with open(path, "wb") as file:
            np.savez(file, embeddings=self.embeddings, paths=np.asarray(self.paths), root=np.asarray(self.root))

    @classmethod
    def load(cls, path: str | Path) -> "ImageIndex":
        try:
            with np.load(path, allow_pickle=False) as stored:
                return cls(stored["embeddings"], stored["paths"].tolist(), str(stored["root"]))
        except (OSError, ValueError, KeyError) as error:
            raise UserError(f"not an image index (mmkeras index): {error}", path=path) from None


def build_index(embedder, images_dir: str | Path) -> ImageIndex:
    """Embed every image under `images_dir` (recursively, sorted by path) with a dual-encoder `Embedder`."""
    images_dir = Path(images_dir)
    files = sorted(path for path in images_dir.rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under the folder", path=images_dir)
    chunks = []
    with step_progress("embedding images", len(files)) as progress:
        for start in range(0, len(files), EMBED_CHUNK):
            chunks.append(embedder.embed_image(files[start : start + EMBED_CHUNK]))
            progress.update(min(start + EMBED_CHUNK, len(files)))
    paths = [path.relative_to(images_dir).as_posix() for path in files]
    return ImageIndex(np.concatenate(chunks), paths, str(images_dir.resolve()))


def search_warnings(alignment: dict | None, hits: list[tuple[str, float]]) -> list[str]:
    """Why a search's results may not fit the text, from the bundle's `alignment` (`None`: no validation figures).

    Args:
        alignment: bundle.json's `alignment`: the align run's `val_recall`,
            `val_recall_chance` and `val_pair_similarity` (`p10`, `median`).
        hits: the search's `(path, score)` pairs, best first.

    Returns:
        One sentence per problem, or none.

    Example:
    >>> search_warnings({"val_recall": {"text_to_image": {"1": 0.02}}, "val_recall_chance": 0.01,
    ...                  "val_pair_similarity": {"p10": 0.3, "median": 0.5}}, [("a.jpg", 0.1)])[0][:28]
    'the align run never learned:'
    """
    if alignment is None:
        return ["the bundle records no validation figures (align without --val): whether its run learned is unknown"]
    warnings = []
    recall = alignment["val_recall"]["text_to_image"]["1"]
    chance = alignment["val_recall_chance"]
    if recall < chance + LEARNED_SHARE * (1 - chance):
        warnings.append(f"the align run never learned: its validation recall@1 (text to image) is {recall:.4f}, "
                        f"chance is {chance:.4f}; these results are close to random (align longer, or on more pairs)")
    floor = alignment["val_pair_similarity"]["p10"]
    if hits and hits[0][1] < floor:
        warnings.append(f"the best image scores {hits[0][1]:.4f}, below 90% of the true validation pairs "
                        f"(their 10th percentile {floor:.4f}): the index may hold no image that fits the text")
    return warnings
