"""Pretrain small keras-hub backbones on synthetic data and save them as local presets.

keras-hub's named presets download from Kaggle, which this machine cannot reach, so LoRA (which only makes
sense on pretrained weights) is benchmarked on backbones pretrained here, seeded, in a few minutes on 2 CPU
cores. Neither the data nor the tasks are samples/ or its task (`<colour>_<calm|excited>` labels):

- **Text**: a keras-hub `BertBackbone` (2 layers, hidden 128, 2 heads, intermediate 512, 64 positions) pretrained by
  masked-language modelling (15% of the tokens chosen, at least one per line: 80% `[MASK]`, 10% a random token, 10%
  kept; the loss covers every real token, chosen or not, see below) on a generated corpus of `CORPUS_LINES` lines of
  one to three English-like sentences from 33 templates. 70% of the sentences describe a person, an animal or an
  object in one of seven moods (calm, excited, happy, sad, angry, tired, scared; 8-12 adjectives each) together with
  a place, an event and a verb that go with that mood 80% of the time and are drawn from any mood otherwise, the way
  real text ties "quiet" to "library" and "wild" to "party"; the other 30% describe objects, colours, shapes and
  times without any mood. The corpus contains every word samples/ texts are written from (their mood adjectives,
  nouns and template words, as a real pretraining corpus would) among about 400 others, but never samples/ texts,
  templates or labels, and nothing in it is labelled. The WordPiece vocabulary (characters, `##` continuations, then
  whole words) is learned from the corpus by mmkeras' `TextTokenizer.train_from_texts` and saved as a keras-hub
  `BertTokenizer`.
- **Vision**: a keras-hub `VGGBackbone` with the architecture of mmkeras' default `tiny` CNN (32x32, four
  blocks of one 3x3 convolution, 48/96/128/128 filters, 2x2 max-pool), pretrained with a global-average-pool
  and two softmax heads to tell, on `VISION_IMAGES` generated images, which of 7 shapes (disc, ring,
  square, diamond, plus, triangle, bar; random size, position and rotation) is drawn and which of 12 hue
  buckets (30 degrees each) its colour falls in; hue, saturation and value are continuous, the background
  is a random colour with a brightness gradient and pixel noise. samples/ draws 5 other-rendered shapes in
  three fixed RGB colours and asks for the colour name; knowing hue is general visual knowledge (ImageNet
  features encode it too), so this pretraining helps that task the way real pretraining would, without
  seeing it. The preset's `VGGImageConverter` maps pixels to -1..1, as the `tiny` CNN expects.

Why the MLM loss covers every token, not only the chosen 15%: with the loss on the chosen tokens only, this
2-layer BERT's outputs at the other positions did not carry their words (a linear probe read calm vs excited
from the mean of the sequence output at 0.73, from the mean of the input embeddings at 0.99), so a frozen or
LoRA-adapted BERT gave the fusion nothing to read the mood from: samples/ test accuracy 0.49 with the text
backbone frozen, 0.53 with LoRA rank 4, against 1.000 for full fine-tuning (all at learning rate 1e-3). Large
pretrained encoders' last layers do carry their tokens (the words can be read back from them); predicting
every token as well as the masked ones gives the tiny one that property: frozen 0.66, LoRA rank 4 0.973 after
10 epochs and 1.000 after 20.

Prints one JSON object (preset folders, held-out pretraining accuracies, parameter counts, seconds).

    python benchmarks/tiny_pretrained_presets.py [--out DIR] [--seed 0]

Example:
>>> presets = write_presets("/tmp/presets", seed=0)  # doctest: +SKIP
>>> build_model(str(presets.text), str(presets.vision), num_classes=6)  # doctest: +SKIP
"""

import argparse
import colorsys
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import keras
import keras_hub
import numpy as np

from mmkeras.preprocessing.text import MASK, TextTokenizer

TEXT_PRESET, VISION_PRESET = "text_bert", "vision_vgg"
CORPUS_LINES = 24000
TEXT_EPOCHS = 4
TEXT_SEQUENCE_LENGTH = 32
TEXT_MAX_POSITIONS = 64
MASK_RATE = 0.15
MAX_MASKED = 6
VISION_IMAGES = 12000
VISION_EPOCHS = 8
IMAGE_SIZE = 32
HUE_BUCKETS = 12
SHAPES = ("disc", "ring", "square", "diamond", "plus", "triangle", "bar")
BATCH_SIZE = 64
LEARNING_RATE = 1e-3
HELD_OUT = 0.1
BERT = {"num_layers": 2, "num_heads": 2, "hidden_dim": 128, "intermediate_dim": 512}
VGG = {"stackwise_num_repeats": [1, 1, 1, 1], "stackwise_num_filters": [48, 96, 128, 128]}
# The tiny CNN's input scaling (mmkeras.models.vision_backbones.CENTRED_SCALE / CENTRED_OFFSET).
PIXEL_SCALE, PIXEL_OFFSET = 2.0 / 255.0, -1.0

MOODS = {
    "calm": (
        ("calm", "quiet", "peaceful", "relaxed", "serene", "gentle", "tranquil", "mellow", "still", "restful"),
        ("lake", "library", "garden", "meadow", "temple", "cabin", "pond", "beach"),
        ("nap", "sunset", "picnic", "meditation", "tea", "bath", "walk", "reading"),
        ("rested", "drifted", "whispered", "floated", "napped", "strolled", "breathed", "waited"),
    ),
    "excited": (
        ("excited", "energetic", "lively", "thrilled", "wild", "restless", "buzzing", "hyper", "eager", "rowdy"),
        ("stadium", "arcade", "carnival", "club", "playground", "fair", "arena", "circus"),
        ("party", "concert", "race", "festival", "fireworks", "match", "parade", "game"),
        ("jumped", "shouted", "danced", "cheered", "raced", "screamed", "bounced", "rushed"),
    ),
    "happy": (
        ("happy", "cheerful", "glad", "joyful", "merry", "delighted", "content", "pleased"),
        ("bakery", "zoo", "kitchen", "school", "market", "farm"),
        ("birthday", "wedding", "holiday", "reunion", "gift", "dinner"),
        ("smiled", "laughed", "sang", "hugged", "waved", "giggled"),
    ),
    "sad": (
        ("sad", "gloomy", "lonely", "miserable", "tearful", "glum", "heartbroken", "downcast"),
        ("hospital", "station", "cemetery", "harbour", "hallway", "attic"),
        ("funeral", "goodbye", "loss", "breakup", "rain", "letter"),
        ("cried", "sighed", "wept", "stared", "sobbed", "frowned"),
    ),
    "angry": (
        ("angry", "furious", "grumpy", "annoyed", "irritated", "mad", "cross", "bitter"),
        ("office", "highway", "court", "queue", "garage", "bank"),
        ("argument", "delay", "fight", "meeting", "fine", "complaint"),
        ("yelled", "slammed", "argued", "stomped", "growled", "snapped"),
    ),
    "tired": (
        ("tired", "weary", "exhausted", "drowsy", "sleepy", "worn", "drained", "sluggish"),
        ("bed", "bus", "couch", "factory", "train", "hotel"),
        ("shift", "marathon", "exam", "move", "flight", "deadline"),
        ("yawned", "slept", "slumped", "dozed", "stretched", "nodded"),
    ),
    "scared": (
        ("scared", "afraid", "nervous", "anxious", "frightened", "timid", "uneasy", "tense"),
        ("forest", "cave", "basement", "alley", "tunnel", "swamp"),
        ("storm", "nightmare", "thunder", "blackout", "howl", "test"),
        ("trembled", "hid", "froze", "fled", "shivered", "gasped"),
    ),
}
WORDS = {
    "person": (
        "friend", "sister", "brother", "teacher", "neighbour", "baby", "mother", "father", "kid", "crowd",
        "team", "boss", "doctor", "student", "someone", "uncle", "grandma", "coach", "pilot", "singer",
    ),
    "animal": ("dog", "cat", "bird", "horse", "puppy", "kitten", "fox", "rabbit", "owl", "fish", "goat", "duck"),
    "object": (
        "sticker", "badge", "picture", "drawing", "icon", "card", "tile", "poster", "note", "token", "book",
        "cup", "lamp", "chair", "box", "ball", "kite", "hat", "coat", "phone", "clock", "map", "photo",
        "bottle", "key", "painting", "mug", "scarf", "stamp", "button",
    ),
    "colour": (
        "red", "green", "blue", "yellow", "purple", "orange", "black", "white", "grey", "pink", "brown", "navy",
    ),
    "shape": ("circle", "square", "triangle", "ring", "star", "line", "dot", "stripe", "heart", "arrow"),
    "time": ("morning", "evening", "afternoon", "night", "weekend", "day", "week", "summer", "winter", "spring"),
    "furniture": ("table", "shelf", "wall", "desk", "floor", "door", "window", "bench", "counter", "fridge"),
}
MOOD_TEMPLATES = (
    "the {person} felt {mood} at the {place}",
    "everyone at the {place} was {mood} after the {event}",
    "it was a {mood} {time} by the {place}",
    "she looks {mood} when she {verb} at the {place}",
    "the {animal} seems {mood} today",
    "we were {mood} during the {event}",
    "honestly the {event} made me {mood}",
    "a {mood} {animal} {verb} near the {place}",
    "the mood at the {place} is {mood}",
    "feeling {mood} after the {event}",
    "my {person} is so {mood} this {time}",
    "someone called the {event} {mood}",
    "{mood} vibes at the {place} only",
    "this {object} looks {mood} to me",
    "the {object} from the {event} seems {mood}",
    "what a {mood} kind of {event}",
    "he {verb} and felt {mood}",
    "after the {event} the {person} {verb}, {mood} and happy to be home",
    "the {place} is {mood} here in the {time}",
    "i was {mood} so i {verb}",
    "a {mood} {person} {verb} at the {event}",
    "they called it a {mood} {event}",
    "the whole {place} seemed {mood} to the {person}",
)
PLAIN_TEMPLATES = (
    "the {colour} {object} is on the {furniture}",
    "my {person} drew a {colour} {shape} on the {object}",
    "someone called about the {object} this {time}",
    "i found a {object} with a {shape} on it",
    "the {animal} sat next to the {colour} {object}",
    "here is the {object} i told you about",
    "this {object} has a {colour} {shape}",
    "only one {object} was left on the {furniture}",
    "it seems the {person} lost the {object} today",
    "honestly i like this kind of {object}",
    "a naive {person} bought a {colour} {object} at the cafe",
)
SENTENCE_JOINS = (". ", ", and ", "; ")


@dataclasses.dataclass
class PretrainedPresets:
    """What `write_presets` wrote.

    Args:
        text: the BERT preset folder (backbone + `BertTokenizer`).
        vision: the VGG preset folder (backbone + `VGGImageConverter`).
        figures: pretraining figures (held-out accuracies, parameter counts, seconds).
    """

    text: Path
    vision: Path
    figures: dict


def write_presets(
    out_dir,
    *,
    seed: int = 0,
    corpus_lines: int = CORPUS_LINES,
    text_epochs: int = TEXT_EPOCHS,
    vision_images: int = VISION_IMAGES,
    vision_epochs: int = VISION_EPOCHS,
) -> PretrainedPresets:
    """Pretrain a BERT and a VGG backbone (see the module docstring) and save them as presets in `out_dir`.

    Args:
        out_dir: folder to write `text_bert/` and `vision_vgg/` into.
        seed: seeds the data, the weights, the masking and the shuffling.
        corpus_lines: lines of generated text (10% held out to measure MLM accuracy).
        text_epochs: MLM epochs over the training lines.
        vision_images: generated images (10% held out).
        vision_epochs: epochs over the training images.

    Returns:
        A `PretrainedPresets`.
    """
    out_dir = Path(out_dir)
    text_preset, vision_preset = out_dir / TEXT_PRESET, out_dir / VISION_PRESET
    started = time.perf_counter()
    text_figures = pretrain_text(text_preset, generate_corpus(corpus_lines, seed), seed=seed, epochs=text_epochs)
    text_figures["seconds"] = round(time.perf_counter() - started, 1)
    started = time.perf_counter()
    images, shapes, hues = generate_images(vision_images, seed)
    vision_figures = pretrain_vision(vision_preset, images, shapes, hues, seed=seed, epochs=vision_epochs)
    vision_figures["seconds"] = round(time.perf_counter() - started, 1)
    return PretrainedPresets(text_preset, vision_preset, {"text": text_figures, "vision": vision_figures})


def generate_corpus(lines: int, seed: int) -> list[str]:
    """`lines` lines of one to three generated sentences (see the module docstring), seeded."""
    rng = np.random.default_rng(seed)
    mood_names = list(MOODS)

    def pick(options):
        return options[rng.integers(len(options))]

    def sentence():
        fills = {slot: pick(words) for slot, words in WORDS.items()}
        if rng.random() >= 0.7:
            return pick(PLAIN_TEMPLATES).format(**fills)
        mood = MOODS[pick(mood_names)]
        # The scene goes with the mood most of the time, as in real text; sometimes it does not.
        scene = mood if rng.random() < 0.8 else MOODS[pick(mood_names)]
        fills.update(mood=pick(mood[0]), place=pick(scene[1]), event=pick(scene[2]), verb=pick(scene[3]))
        return pick(MOOD_TEMPLATES).format(**fills)

    corpus = []
    for _ in range(lines):
        text = sentence()
        for _ in range(rng.integers(3)):
            text += pick(SENTENCE_JOINS) + sentence()
        corpus.append(text)
    return corpus


def mask_tokens(token_ids, padding_mask, vocabulary_size: int, mask_id: int, rng):
    """BERT's masking: `(masked inputs, chosen)`, `chosen` marking the masked positions.

    Of the real tokens other than `[CLS]`/`[SEP]`, `MASK_RATE` (at least one, at most `MAX_MASKED`) are chosen
    per line; a chosen token becomes `[MASK]` 80% of the time, a random token 10%, and stays 10%.
    """
    inputs = token_ids.copy()
    chosen = np.zeros(token_ids.shape, bool)
    lengths = padding_mask.sum(axis=1)
    for row in range(len(token_ids)):
        candidates = np.arange(1, lengths[row] - 1)  # between [CLS] and [SEP]
        count = min(MAX_MASKED, len(candidates), max(1, round(MASK_RATE * len(candidates))))
        positions = rng.choice(candidates, count, replace=False)
        chosen[row, positions] = True
        action = rng.random(count)
        inputs[row, positions[action < 0.8]] = mask_id
        random_tokens = positions[(action >= 0.8) & (action < 0.9)]
        inputs[row, random_tokens] = rng.integers(5, vocabulary_size, len(random_tokens))
    return inputs, chosen


def pretrain_text(preset: Path, corpus: list[str], *, seed: int, epochs: int) -> dict:
    """MLM-pretrain the BERT on `corpus` and save it with its tokenizer to `preset`."""
    tokenizer = TextTokenizer.train_from_texts(corpus, vocabulary_size=4096, sequence_length=TEXT_SEQUENCE_LENGTH)
    vocabulary = tokenizer.vocabulary
    token_ids, padding_mask = tokenizer.encode_batch(corpus)
    mask_id = vocabulary.index(MASK)
    rng = np.random.default_rng(seed + 1)

    def masked_rows(index):
        """`(inputs, targets, weights of every real token, weights of the masked ones)` of the lines `index`,
        masked afresh (a new draw every call)."""
        masked, chosen = mask_tokens(token_ids[index], padding_mask[index], len(vocabulary), mask_id, rng)
        inputs = {
            "token_ids": masked,
            "padding_mask": padding_mask[index],
            "segment_ids": np.zeros_like(masked),
            "mask_positions": np.broadcast_to(np.arange(masked.shape[1], dtype="int32"), masked.shape),
        }
        return inputs, token_ids[index], padding_mask[index].astype("float32"), chosen.astype("float32")

    train, held_out = _split(len(corpus))
    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=len(vocabulary), max_sequence_length=TEXT_MAX_POSITIONS, **BERT
    )
    masked_lm = keras_hub.models.BertMaskedLM(backbone=backbone, preprocessor=None)
    masked_lm.compile(
        optimizer=keras.optimizers.Adam(LEARNING_RATE),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    losses = []
    # Dynamic masking: new masks and a new order every epoch (keras-hub tasks do not shuffle arrays themselves).
    for epoch in range(epochs):
        inputs, targets, every_token, _ = masked_rows(rng.permutation(train))
        history = masked_lm.fit(inputs, targets, sample_weight=every_token, batch_size=BATCH_SIZE, verbose=0)
        losses.append(history.history["loss"][-1])
        _log(f"MLM epoch {epoch + 1}/{epochs}: {history.history}")
    inputs, targets, _, masked_only = masked_rows(held_out)
    _, accuracy = masked_lm.evaluate(inputs, targets, sample_weight=masked_only, batch_size=256, verbose=0)
    backbone.save_to_preset(preset)
    keras_hub.models.BertTokenizer(vocabulary=vocabulary, lowercase=True).save_to_preset(preset)
    return {
        "task": "masked-language modelling",
        "lines": len(corpus),
        "vocabulary_size": len(vocabulary),
        "epochs": epochs,
        "final_train_loss": round(float(losses[-1]), 4),
        "held_out_masked_token_accuracy": round(float(accuracy), 4),
        "backbone_params": int(backbone.count_params()),
    }


def generate_images(count: int, seed: int):
    """`(images uint8 [N, 32, 32, 3], shape ids, hue buckets)`: one shape per image (see the module docstring)."""
    rng = np.random.default_rng(seed + 2)
    fine = 2 * IMAGE_SIZE  # drawn at twice the size, then averaged: smooth edges
    grid = (np.arange(fine) + 0.5) / fine * 2 - 1  # -1..1
    y, x = np.meshgrid(grid, grid, indexing="ij")
    images = np.empty((count, IMAGE_SIZE, IMAGE_SIZE, 3), "uint8")
    shapes = rng.integers(len(SHAPES), size=count)
    hues = rng.random(count)
    for index in range(count):
        radius = rng.uniform(0.35, 0.75)
        centre = rng.uniform(-(1 - radius), 1 - radius, 2)
        angle = rng.uniform(0, 2 * np.pi)
        u = np.cos(angle) * (x - centre[0]) + np.sin(angle) * (y - centre[1])
        v = -np.sin(angle) * (x - centre[0]) + np.cos(angle) * (y - centre[1])
        mask = _shape_mask(SHAPES[shapes[index]], u / radius, v / radius)
        mask = mask.reshape(IMAGE_SIZE, 2, IMAGE_SIZE, 2).mean(axis=(1, 3))[..., None]
        colour = np.array(colorsys.hsv_to_rgb(hues[index], rng.uniform(0.45, 1.0), rng.uniform(0.45, 1.0))) * 255
        background = rng.uniform(0, 255, 3) * (1 + rng.uniform(-0.4, 0.4) * grid[::2, None, None])
        pixels = mask * colour + (1 - mask) * background + rng.normal(0, 8, (IMAGE_SIZE, IMAGE_SIZE, 3))
        images[index] = np.clip(pixels, 0, 255).astype("uint8")
    return images, shapes.astype("int32"), (hues * HUE_BUCKETS).astype("int32")


def _shape_mask(shape: str, u, v):
    """Inside-the-shape test on coordinates scaled so the shape spans about -1..1."""
    radius = np.hypot(u, v)
    if shape == "disc":
        return radius < 1
    if shape == "ring":
        return (radius < 1) & (radius > 0.6)
    if shape == "square":
        return np.maximum(abs(u), abs(v)) < 0.8
    if shape == "diamond":
        return abs(u) + abs(v) < 1
    if shape == "plus":
        return ((abs(u) < 0.3) & (abs(v) < 1)) | ((abs(v) < 0.3) & (abs(u) < 1))
    if shape == "triangle":
        return (v < 0.5) & (v > 2 * abs(u) - 1)
    return (abs(u) < 1) & (abs(v) < 0.35)  # bar


def pretrain_vision(preset: Path, images, shapes, hues, *, seed: int, epochs: int) -> dict:
    """Pretrain the VGG on shape and hue-bucket prediction and save it with its image converter to `preset`."""
    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.VGGBackbone(image_shape=(IMAGE_SIZE, IMAGE_SIZE, 3), **VGG)
    pixels = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(backbone(keras.layers.Rescaling(PIXEL_SCALE, PIXEL_OFFSET)(pixels)))
    outputs = {
        "shape": keras.layers.Dense(len(SHAPES), name="shape")(pooled),
        "hue": keras.layers.Dense(HUE_BUCKETS, name="hue")(pooled),
    }
    model = keras.Model(pixels, outputs)
    model.compile(
        optimizer=keras.optimizers.Adam(LEARNING_RATE),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics={"shape": "accuracy", "hue": "accuracy"},
    )
    train, held_out = _split(len(images))
    labels = {"shape": shapes, "hue": hues}
    history = model.fit(
        images[train].astype("float32"), _rows(labels, train), batch_size=BATCH_SIZE, epochs=epochs, verbose=0
    )
    _log(f"vision pretraining: {history.history}")
    scores = model.evaluate(
        images[held_out].astype("float32"), _rows(labels, held_out), batch_size=256, verbose=0, return_dict=True
    )
    backbone.save_to_preset(preset)
    keras_hub.layers.VGGImageConverter(
        image_size=(IMAGE_SIZE, IMAGE_SIZE), scale=PIXEL_SCALE, offset=PIXEL_OFFSET
    ).save_to_preset(preset)
    return {
        "task": f"shape ({len(SHAPES)}) and hue bucket ({HUE_BUCKETS}) prediction",
        "images": len(images),
        "epochs": epochs,
        "final_train_loss": round(float(history.history["loss"][-1]), 4),
        "held_out_shape_accuracy": round(float(scores["shape_accuracy"]), 4),
        "held_out_hue_accuracy": round(float(scores["hue_accuracy"]), 4),
        "backbone_params": int(backbone.count_params()),
    }


def _split(rows: int):
    """`(train, held_out)` index arrays: the last `HELD_OUT` share is held out (the data are shuffled already)."""
    held_out = max(1, int(rows * HELD_OUT))
    return np.arange(rows - held_out), np.arange(rows - held_out, rows)


def _log(message: str):
    print(message, file=sys.stderr, flush=True)


def _rows(arrays: dict, index):
    return {name: value[index] for name, value in arrays.items()}


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="folder for the presets (default: a new temporary folder)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="mmkeras-presets-"))
    presets = write_presets(out, seed=args.seed)
    _log(f"presets written to {out}")
    report = {"text_preset": str(presets.text), "vision_preset": str(presets.vision), "seed": args.seed}
    print(json.dumps({**report, **presets.figures}, indent=2))


if __name__ == "__main__":
    main()
