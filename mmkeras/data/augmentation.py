"""`augment_photo`: random resized crop, horizontal flip and colour jitter for real photos.

Training with `augment: photo` passes every training image through this
function in the tf.data pipeline, after decoding and before batching; the
model, evaluation, calibration, QAT calibration and export never see it.

Every random choice comes from TensorFlow's *stateless* ops, seeded from
`(run seed, epoch, row)`: an image gets the same crop, flip and colours in
every process, on every worker of a multi-worker run and after `--resume`,
whatever the shuffle order, batch size or number of replicas. keras'
preprocessing layers (`RandomFlip`, `RandomCrop`, ...) draw from a stateful
seed generator instead, whose state depends on how many images a process has
seen, so a resumed run or another sharding would augment differently.

The ranges are torchvision's usual ones for photos, made milder where a
classifier of small images would lose its subject: the crop keeps 25-100% of
the area (not 8%) at an aspect ratio of 3/4 to 4/3.

Example:
>>> image = tf.zeros((32, 32, 3), tf.uint8)                                   # doctest: +SKIP
>>> augmented = augment_photo(image, tf.constant([7, 3], tf.int64), (32, 32))  # doctest: +SKIP
>>> augmented.shape, augmented.dtype                                          # doctest: +SKIP
(TensorShape([32, 32, 3]), tf.float32)
"""

import tensorflow as tf

CROP_AREA = (0.25, 1.0)
CROP_ASPECT_RATIO = (3 / 4, 4 / 3)
BRIGHTNESS_DELTA = 0.2  # of the 0..1 range
CONTRAST_RANGE = (0.8, 1.2)
SATURATION_RANGE = (0.8, 1.2)
HUE_DELTA = 0.02  # of the colour circle
_RANDOM_OPS = 6


def augment_photo(image: tf.Tensor, seed: tf.Tensor, image_size: tuple[int, int]) -> tf.Tensor:
    """One image, randomly cropped and resized back, maybe flipped, and colour-jittered.

    Args:
        image: `[height, width, 3]` RGB in 0..255 (uint8 or float).
        seed: int `[2]` stateless seed; equal seeds give equal results.
        image_size: `(height, width)` of the result (the model's input size).

    Returns:
        float32 `[height, width, 3]` in 0..255.
    """
    crop_seed, flip_seed, brightness_seed, contrast_seed, saturation_seed, hue_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, num=_RANDOM_OPS)
    )
    pixels = tf.cast(image, tf.float32) / 255.0
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(pixels),
        bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=crop_seed,
        min_object_covered=0.0,
        aspect_ratio_range=CROP_ASPECT_RATIO,
        area_range=CROP_AREA,
        use_image_if_no_bounding_boxes=True,
    )
    pixels = tf.image.resize(tf.slice(pixels, begin, size), image_size, method="bilinear")
    pixels = tf.image.stateless_random_flip_left_right(pixels, flip_seed)
    pixels = tf.image.stateless_random_brightness(pixels, BRIGHTNESS_DELTA, brightness_seed)
    pixels = tf.image.stateless_random_contrast(pixels, *CONTRAST_RANGE, contrast_seed)
    pixels = tf.image.stateless_random_saturation(pixels, *SATURATION_RANGE, saturation_seed)
    pixels = tf.image.stateless_random_hue(pixels, HUE_DELTA, hue_seed)
    pixels = tf.clip_by_value(pixels, 0.0, 1.0) * 255.0
    return tf.ensure_shape(pixels, (*image_size, 3))


def row_seed(epoch_seed: int, row: tf.Tensor) -> tf.Tensor:
    """The stateless seed of one row in one epoch: `[epoch seed, row index]`."""
    return tf.stack([tf.constant(epoch_seed, tf.int64), tf.cast(row, tf.int64)])
