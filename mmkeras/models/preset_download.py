"""The one-line error of a keras-hub preset name that cannot be downloaded (no internet).

A preset name (`dinov2_small`, `bert_tiny_en_uncased`, ...) is fetched from
Kaggle the first time; offline, keras-hub raises a raw
`HTTPSConnectionPool(host='api.kaggle.com', ...)`. This says what the user
can do instead: connect, or pass a local folder, made once on a machine
that is online.

Example:
>>> error = offline_preset_error("dinov2_small", "vision", OSError("HTTPSConnectionPool(host='api.kaggle.com')"))
>>> "needs the internet" in str(error)
True
"""

import keras_hub

from mmkeras.errors import UserError

# What keras-hub's download raises when the network is down (requests' ConnectionError is an OSError).
_NETWORK_HINTS = ("HTTPSConnectionPool", "Failed to resolve", "Max retries exceeded", "Network is unreachable")


def offline_preset_error(spec: str, kind: str, error: BaseException) -> UserError | None:
    """A `UserError` when `spec` is a keras-hub preset name whose download failed for want of a network.

    Args:
        spec: the backbone SPEC the user gave.
        kind: `text` or `vision` (named in the message).
        error: what keras-hub raised.

    Returns:
        The error to raise, or `None` when `spec` is not a preset name or
        the failure is not a network one.
    """
    preset = keras_hub.models.Backbone.presets.get(spec)
    if preset is None or not any(hint in str(error) for hint in _NETWORK_HINTS):
        return None
    handle = str(preset.get("kaggle_handle", "")).removeprefix("kaggle://")
    return UserError(
        f"{kind} backbone {spec!r} is a keras-hub preset name: it downloads from Kaggle and needs the internet, "
        "which this machine cannot reach; pass a local folder instead, made on a machine online with "
        f"`python -c \"import kagglehub; print(kagglehub.model_download('{handle}'))\"` (copy the folder it prints)"
    )
