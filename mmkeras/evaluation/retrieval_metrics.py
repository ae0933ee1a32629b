"""`retrieval_recall`: recall@K of text-to-image and image-to-text retrieval, from embeddings.

NumPy only (no TensorFlow): an align run's validation, zero-shot checks and
the int8 bundle's comparison with the float one all rank the same way.

Example:
>>> import numpy as np
>>> texts = np.eye(3, dtype="float32")
>>> images = np.eye(3, dtype="float32")[[0, 2, 1]]
>>> retrieval_recall(texts, images, ks=(1, 2))["text_to_image"]
{'1': 0.3333, '2': 1.0}
"""

import numpy as np

RECALL_KS = (1, 5, 10)


def retrieval_recall(text_embeddings, image_embeddings, groups=None, ks=RECALL_KS) -> dict:
    """Recall@K both ways over N (text, image) pairs: row i of each is a true pair.

    A query's hit is its own pair among the top K of all N candidates by
    cosine similarity (embeddings are L2-normalised), or any candidate of
    its group when `groups` is given (rows of one label are interchangeable).

    Args:
        text_embeddings: [N, D] L2-normalised text embeddings.
        image_embeddings: [N, D] L2-normalised image embeddings.
        groups: [N] group ids (e.g. labels), or `None` (every row its own).
        ks: the K values.

    Returns:
        `{"text_to_image": {"1": r, ...}, "image_to_text": {...}}`, rounded to 4 digits.
    """
    similarity = np.asarray(text_embeddings, np.float32) @ np.asarray(image_embeddings, np.float32).T
    groups = np.arange(len(similarity)) if groups is None else np.asarray(groups)
    return {
        "text_to_image": _recall(similarity, groups, ks),
        "image_to_text": _recall(similarity.T, groups, ks),
    }


def _recall(similarity: np.ndarray, groups: np.ndarray, ks) -> dict:
    # Best rank of a relevant candidate: 1 + how many irrelevant candidates score above the best relevant one.
    relevant = groups[:, None] == groups[None, :]
    best_relevant = np.where(relevant, similarity, -np.inf).max(axis=1, keepdims=True)
    rank = 1 + np.sum((similarity > best_relevant) & ~relevant, axis=1)
    return {str(k): round(float(np.mean(rank <= k)), 4) for k in ks}
