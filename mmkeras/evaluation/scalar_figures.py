"""`scalar_figures`: the headline numbers of `evaluate`'s figures, flat, for tables and averages."""


def scalar_figures(figures: dict) -> dict:
    """One flat `{name: number}` of an evaluation: what cross-validation averages and `compare` tabulates.

    Example:
    >>> scalar_figures({"accuracy": 0.9, "macro_f1": 0.8, "macro_average_precision": 0.85, "n": 10,
    ...                 "top_k_accuracy": {"top_2": 1.0},
    ...                 "calibration": {"ece": 0.05}, "consistency": {"flipped_without_text": 0.1},
    ...                 "modality_ablation": {"text_only": {"accuracy": 0.5}, "image_only": {"accuracy": 0.6}}})
    ... # doctest: +NORMALIZE_WHITESPACE
    {'accuracy': 0.9, 'macro_f1': 0.8, 'macro_average_precision': 0.85, 'top_2_accuracy': 1.0, 'ece': 0.05,
     'text_only_accuracy': 0.5, 'image_only_accuracy': 0.6, 'flipped_without_text': 0.1}
    """
    flat = {"accuracy": figures["accuracy"], "macro_f1": figures["macro_f1"]}
    if "macro_average_precision" in figures:  # not in results folders written before it was measured
        flat["macro_average_precision"] = figures["macro_average_precision"]
    flat.update({f"{name}_accuracy": value for name, value in figures.get("top_k_accuracy", {}).items()})
    if "calibration" in figures:
        flat["ece"] = figures["calibration"]["ece"]
    for name in ("text_only", "image_only"):
        flat[f"{name}_accuracy"] = figures["modality_ablation"][name]["accuracy"]
    flat.update({name: value for name, value in figures.get("consistency", {}).items() if name != "correct_rows"})
    return flat
