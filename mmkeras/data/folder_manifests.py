"""`folder_manifests`: a folder of photos to the train, val and test manifests every command reads.

Two layouts are read, the ones photos usually arrive in:

- class folders with caption files: `photos/<label>/<name>.jpg`, its text in
  `photos/<label>/<name>.txt` beside it (UTF-8, stripped; a missing or empty
  one is a missing text, which the models support);
- Hugging Face `imagefolder` metadata: a `metadata.csv`, `metadata.jsonl`
  or `metadata.parquet` (at the top, or in any folder below it; one per
  folder) whose `file_name` column holds each photo's path relative to the
  metadata file, inside its folder, a text column (`text` unless told) and,
  optionally, a label column (`label` unless told); without one, a photo's
  label is its class folder, as imagefolder infers it. Every photo of the
  folder must then have a metadata row, and only one.

A label is the name of the first folder under the given folder (or under the
metadata file's folder) that holds the photo; deeper folders inside a class
are allowed. Hidden files and folders (`.name`) are skipped. HEIC photos
(an iPhone's default format, which Pillow cannot read) are left out and named
(`unreadable_photos`, `FolderManifests.left_out`); a folder holding only them
is refused, saying so.

Split folders directly under the folder (imagefolder's `train/`,
`validation/`, `test/` and their other names, `SPLIT_FOLDERS`), each laid out
as above, are kept as the user split them; a metadata file at the top may
list the photos of every split folder (`file_name: train/cat/1.jpg`), each
photo then in the split of its folder. A split without a folder is made
from the train photos by its share. Without split folders the photos are
split per label (stratified), deterministically for a seed: of
a label's `n` photos, `max(1, round(n * share))` go to val and likewise to
test, the rest to train; a label whose train part would be empty keeps all
its photos in train and is reported (`FolderManifests.only_in_train`).
Labels that differ only in case or surrounding spaces (`Cat/` and `cat/`)
are refused here, as `read_manifest` would refuse the manifests. The
manifests are CSV files with the columns `image,text,label`, their image
paths relative to the manifest (as `read_manifest` resolves them), so the
photos and the manifests can move together. Why a command that writes
manifests rather than a folder reader in every command:
docs/design.md#folders-of-photos-to-manifests.

This module does not import TensorFlow.

Example:
>>> written = folder_manifests("photos", "photos-manifests")         # doctest: +SKIP
>>> written.manifests["train"], written.counts["val"]                  # doctest: +SKIP
(PosixPath('photos-manifests/train.csv'), {'cat': 1, 'dog': 1})
"""

import csv
import dataclasses
import io
import logging
import os
import random
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path

from mmkeras.atomic_files import write_atomically
from mmkeras.data.manifest import read_manifest
from mmkeras.data.parquet_manifest import embedded_image_name
from mmkeras.errors import UserError
from mmkeras.preprocessing.image import IMAGE_SUFFIXES
from mmkeras.preprocessing.text_cleaning import InvalidTextError, clean_text

SPLITS = ("train", "val", "test")
VAL_SHARE = 0.1
TEST_SHARE = 0.1
# imagefolder's names (Hugging Face `datasets`): the metadata files and the column of the photo's path.
METADATA_NAMES = ("metadata.csv", "metadata.jsonl", "metadata.parquet")
FILE_NAME_COLUMN = "file_name"
CAPTION_SUFFIX = ".txt"
# Folder names imagefolder reads as splits (Hugging Face `datasets`' split patterns), and the manifest each one is.
SPLIT_FOLDERS = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val",
    "test": "test", "testing": "test", "eval": "test",
}
# Photos that `image_files` leaves out because Pillow cannot read them: an iPhone's HEIC photos. `mmkeras
# manifest` and `predict --images` name them in a warning (a phone dump's manifests, or its "predicted 4 of 4
# photos", said nothing of its HEIC ones).
UNREADABLE_PHOTO_SUFFIXES = (".heic", ".heif")
UNREADABLE_PHOTOS_SHOWN = 3

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Photo:
    """One photo of the folder: its file, its text (`None` when missing), its label and where the label was read.

    `label_from` names the class folder, or the metadata file and row, that gave the label.
    """

    image: Path
    text: str | None
    label: str
    label_from: str


@dataclasses.dataclass
class FolderManifests:
    """What `folder_manifests` wrote.

    Args:
        manifests: the CSV file of each split written, by split name.
        counts: the photos of each label in each split, `{split: {label: photos}}`.
        without_text: how many photos have no text.
        only_in_train: the labels with too few photos for val and test, and their photos (all in train).
        texts_from: where the texts came from: `caption files`, or the metadata files' paths.
        split_folders: the splits read from the folder's split folders as they are, by split name.
        left_out: the HEIC photos left out (`unreadable_photos`: paths relative to the folder).
    """

    manifests: dict[str, Path]
    counts: dict[str, dict[str, int]]
    without_text: int
    only_in_train: dict[str, int]
    texts_from: str
    split_folders: dict[str, Path] = dataclasses.field(default_factory=dict)
    left_out: list[str] = dataclasses.field(default_factory=list)

    def as_dict(self) -> dict:
        """The result as JSON values (the CLI's `--json`)."""
        return {
            **dataclasses.asdict(self),
            "manifests": {split: str(path) for split, path in self.manifests.items()},
            "split_folders": {split: str(path) for split, path in self.split_folders.items()},
        }


def folder_manifests(
    folder: str | Path,
    out: str | Path,
    *,
    val: float = VAL_SHARE,
    test: float = TEST_SHARE,
    seed: int = 0,
    text_column: str = "text",
    label_column: str = "label",
    overwrite: bool = False,
) -> FolderManifests:
    """Write `out/train.csv`, `out/val.csv` and `out/test.csv` listing the photos of `folder`.

    Args:
        folder: class folders with caption `.txt` files, or an imagefolder with `metadata.csv`/`.jsonl`/
            `.parquet`; either one in each of split folders (`train/`, `validation/`, `test/`), or split
            folders listed by one metadata file at the top.
        out: the folder to write the manifests into (made if missing).
        val: the share of each label's photos for `val.csv`; 0 writes no `val.csv` (unless a
            `validation/` folder gives the val photos).
        test: the same for `test.csv`.
        seed: the split's seed: the same folder and seed give the same split.
        text_column: the metadata column holding the texts.
        label_column: the metadata column holding the labels, when it has one.
        overwrite: replace manifests that already exist in `out`.

    Returns:
        The manifests written, the photos per label in each, and the HEIC
        photos left out (also named in a warning): convert them to JPEG.

    Raises:
        UserError: no photos (only HEIC ones, said so), a single label, labels that differ only in case,
            a photo beside the class folders (or outside the split folders), a
            label in val or test that train lacks, a caption file that is not
            UTF-8, two metadata files in one folder, a metadata row whose photo
            is missing or outside the metadata file's folder, a photo without a
            metadata row or with two, shares that leave no train photos, or a
            manifest in `out` that exists (without `overwrite`).

    Example:
    >>> folder_manifests("photos", "photos-manifests", val=0.2, test=0).manifests  # doctest: +SKIP
    {'train': PosixPath('photos-manifests/train.csv'), 'val': PosixPath('photos-manifests/val.csv')}
    """
    # Normalized (no `..`): the photos' paths, normalized, are compared with the folders holding them.
    folder, out = Path(os.path.normpath(folder)), Path(out)
    shares = {"val": val, "test": test}
    _check_shares(shares)
    split_folders = _split_folders(folder)
    # A split folder is read as it is; a split without one is made from the train photos by its share.
    shares = {split: 0 if split in split_folders else share for split, share in shares.items()}
    targets = {
        split: out / f"{split}.csv" for split in SPLITS
        if split == "train" or split in split_folders or shares[split] > 0
    }
    existing = [path for path in targets.values() if path.exists()]
    if existing and not overwrite:
        raise UserError("the manifest exists; pass --overwrite to replace it", path=existing[0])
    given, texts_from = _read_photos(folder, split_folders, text_column, label_column)
    # A HEIC photo a metadata file lists is in the manifests (train's image check names it): not left out.
    listed = {photo.image for photos in given.values() for photo in photos}
    left_out = [name for name in unreadable_photos(folder) if folder / name not in listed]
    if left_out:
        logger.warning("warning: %s: left out %s", folder, heic_photos(left_out))
    splits, only_in_train = _split(given["train"], shares, seed)
    splits.update({split: photos for split, photos in given.items() if split != "train"})
    out.mkdir(parents=True, exist_ok=True)
    for split, path in targets.items():
        _write_manifest(path, splits[split])
    for split in SPLITS:
        if split not in targets and (out / f"{split}.csv").exists():
            logger.warning("%s is left from an earlier split (this one has no %s); delete it",
                           out / f"{split}.csv", split)
    return FolderManifests(
        manifests=targets,
        counts={split: dict(sorted(Counter(photo.label for photo in splits[split]).items())) for split in targets},
        without_text=sum(photo.text is None for photos in given.values() for photo in photos),
        only_in_train=only_in_train,
        texts_from=texts_from,
        split_folders=split_folders,
        left_out=left_out,
    )


def _check_shares(shares: dict[str, float]):
    for split, share in shares.items():
        if not 0 <= share < 1:
            raise UserError(f"must be at least 0 and less than 1, got {share}", setting=f"--{split}")
    if sum(shares.values()) >= 1:
        raise UserError(f"--val and --test leave no photos to train on ({shares['val']} + {shares['test']} >= 1)")


def _split_folders(folder: Path) -> dict[str, Path]:
    """The split folders directly under `folder` (`train/`, `validation/`, ...), by the split each one is."""
    if not folder.is_dir():
        raise UserError("not a folder of photos" if folder.exists() else "folder not found", path=folder)
    found: dict[str, Path] = {}
    for child in sorted(folder.iterdir()):
        split = SPLIT_FOLDERS.get(child.name.lower())
        if split is None or not child.is_dir():
            continue
        if split in found:
            raise UserError(f"two folders of the {split} split: {found[split].name}/ and {child.name}/", path=folder)
        found[split] = child
    if found and "train" not in found:
        names = ", ".join(f"{path.name}/" for path in found.values())
        raise UserError(f"split folders ({names}) but none of train: add a train/ folder", path=folder)
    return {split: found[split] for split in SPLITS if split in found}


def _read_photos(
    folder: Path, split_folders: dict[str, Path], text_column: str, label_column: str
) -> tuple[dict[str, list[Photo]], str]:
    """The photos of each split folder (or of the whole folder, as `train`), and where the texts came from."""
    if not split_folders:
        photos, texts_from = _find_photos(folder, text_column, label_column)
        _check_labels({"train": photos}, folder)
        return {"train": photos}, texts_from
    split_names = {path.name for path in split_folders.values()}
    images, metadata_files = image_files(folder), _metadata_files(folder)
    # A metadata file at the top may list the photos of the split folders (`file_name: train/cat/1.jpg`).
    top_metadata = [path for path in metadata_files if path.parent == folder]
    outside = [path for path in images + metadata_files
               if path not in top_metadata and path.relative_to(folder).parts[0] not in split_names]
    if outside:
        raise UserError(f"outside the split folders ({_folder_names(split_folders)}): move it into one of them",
                        path=outside[0])
    if top_metadata:
        photos = _split_folder_photos_from_metadata(folder, split_folders, images, metadata_files, text_column,
                                                    label_column)
        texts_from = ", ".join(str(path) for path in metadata_files)
    else:
        found = {split: _find_photos(path, text_column, label_column) for split, path in split_folders.items()}
        photos = {split: photos for split, (photos, _) in found.items()}
        texts_from = ", ".join(dict.fromkeys(texts_from for _, texts_from in found.values()))
    _check_labels(photos, folder)
    return photos, texts_from


def _folder_names(split_folders: dict[str, Path]) -> str:
    return ", ".join(f"{path.name}/" for path in split_folders.values())


def _split_folder_photos_from_metadata(
    folder: Path,
    split_folders: dict[str, Path],
    images: list[Path],
    metadata_files: list[Path],
    text_column: str,
    label_column: str,
) -> dict[str, list[Photo]]:
    """The photos of each split folder, as the metadata files at the top and in the split folders list them.

    Each photo is in the split of its folder, as Hugging Face `datasets` before 3.4 split a metadata file at the
    top of split folders (docs/design.md#folders-of-photos-to-manifests).
    """
    split_of = {path.name: split for split, path in split_folders.items()}
    photos = _photos_from_metadata(metadata_files, images, text_column, label_column, split_folders=split_folders)
    by_split: dict[str, list[Photo]] = {split: [] for split in split_folders}
    for photo in photos:
        by_split[split_of[photo.image.relative_to(folder).parts[0]]].append(photo)
    empty = next((split for split, members in by_split.items() if not members), None)
    if empty is not None:
        raise no_photos_error(split_folders[empty])
    return by_split


def _check_labels(photos: dict[str, list[Photo]], folder: Path):
    """One spelling per label, two labels or more, and no label in a given val or test split that train lacks."""
    _check_label_spellings(photo for members in photos.values() for photo in members)
    trained = sorted({photo.label for photo in photos["train"]})
    if len(trained) < 2:
        raise UserError(
            f"every photo has the label {trained[0]!r}; a classifier needs two labels or more "
            "(one folder per label, or a label column)",
            path=folder,
        )
    for split, members in photos.items():
        untrained = next((photo for photo in members if photo.label not in trained), None)
        if untrained is not None:
            raise UserError(f"the label {untrained.label!r} of this {split} photo has no train photos",
                            path=untrained.image)


def _check_label_spellings(photos: Iterable[Photo]):
    """Labels that differ only in case or surrounding spaces are one class misspelt: `read_manifest` refuses them."""
    first: dict[str, Photo] = {}
    for photo in photos:
        seen = first.setdefault(photo.label.strip().casefold(), photo)
        if seen.label != photo.label:
            raise UserError(
                f"the labels {seen.label!r} ({seen.label_from}) and {photo.label!r} ({photo.label_from}) differ only "
                "in case or surrounding spaces; write every label of a class the same way"
            )


def _find_photos(folder: Path, text_column: str, label_column: str) -> tuple[list[Photo], str]:
    """The photos of `folder` with their texts and labels, and where the texts came from."""
    images = image_files(folder)
    if not images:
        raise no_photos_error(folder)
    metadata_files = _metadata_files(folder)
    if metadata_files:
        photos = _photos_from_metadata(metadata_files, images, text_column, label_column)
        texts_from = ", ".join(str(path) for path in metadata_files)
    else:
        if all(_class_folder(image, folder) is None for image in images):
            raise UserError(
                "the photos lie in the folder itself: put each label's photos in a folder named after the label "
                "(or add a metadata.csv with a label column)",
                path=folder,
            )
        photos = [_caption_photo(image, folder) for image in images]
        texts_from = "caption files"
    return photos, texts_from


def image_files(folder: Path) -> list[Path]:
    """The photos under `folder` (`IMAGE_SUFFIXES`), sorted by path, hidden files and folders left out.

    `mmkeras predict --images` reads a folder's photos with it too, so both find the same photos.
    """
    return sorted(
        path for path in folder.rglob("*")
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file() and not _hidden(path, folder)
    )


def unreadable_photos(folder: Path) -> list[str]:
    """The HEIC photos under `folder` (`UNREADABLE_PHOTO_SUFFIXES`; hidden ones left out, as `image_files` does),
    relative to it, sorted."""
    found = (path for path in folder.rglob("*")
             if path.suffix.lower() in UNREADABLE_PHOTO_SUFFIXES and path.is_file() and not _hidden(path, folder))
    return sorted(path.relative_to(folder).as_posix() for path in found)


def heic_photos(left_out: list[str]) -> str:
    """The HEIC photos named (the first few) and what to do with them.

    Example:
    >>> heic_photos(["IMG_1.HEIC", "IMG_2.HEIC", "IMG_3.HEIC", "IMG_4.HEIC"])[:76]
    '4 HEIC photos (IMG_1.HEIC, IMG_2.HEIC, IMG_3.HEIC and 1 more), which mmkeras'
    """
    shown = ", ".join(left_out[:UNREADABLE_PHOTOS_SHOWN])
    more = f" and {len(left_out) - UNREADABLE_PHOTOS_SHOWN} more" if len(left_out) > UNREADABLE_PHOTOS_SHOWN else ""
    photos, them = ("photo", "it") if len(left_out) == 1 else ("photos", "them")
    return (f"{len(left_out)} HEIC {photos} ({shown}{more}), which mmkeras cannot read: convert {them} to JPEG "
            "(an iPhone saves JPEG with Settings > Camera > Formats > Most Compatible)")


def no_photos_error(folder: Path) -> UserError:
    """The error for a folder without photos `image_files` finds: naming its HEIC photos when it holds some."""
    heic = unreadable_photos(folder)
    if heic:
        return UserError(f"no photos here but {heic_photos(heic)}", path=folder)
    return UserError(f"no photos ({', '.join(IMAGE_SUFFIXES)}) in the folder or below it", path=folder)


def _metadata_files(folder: Path) -> list[Path]:
    """The metadata files under `folder`; refuses two in one folder (imagefolder reads one format)."""
    found = sorted(path for name in METADATA_NAMES for path in folder.rglob(name) if not _hidden(path, folder))
    by_folder = defaultdict(list)
    for path in found:
        by_folder[path.parent].append(path)
    for first, *others in by_folder.values():
        if others:
            raise UserError(f"a second metadata file beside {first.name}: keep one of them (Hugging Face "
                            "imagefolder refuses metadata files of different formats too)", path=others[0])
    return found


def _hidden(path: Path, folder: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(folder).parts)


def _class_folder(image: Path, root: Path) -> str | None:
    """The label of `image`: the first folder under `root` holding it (`None`: it lies in `root` itself)."""
    parts = image.relative_to(root).parts
    if len(parts) == 1:
        return None
    if parts[0].lower() in SPLIT_FOLDERS:
        raise UserError(
            f"{parts[0]!r} is the name of a split, not of a label: split folders go directly in the folder given",
            path=root / parts[0],
        )
    return parts[0]


def _photo_label(image: Path, root: Path) -> tuple[str, str]:
    """The label of `image` (its class folder under `root`) and that folder, as `Photo.label_from` names it."""
    label = _class_folder(image, root)
    if label is None:
        raise UserError("a photo beside the label folders: move it into the folder of its label", path=image)
    return label, f"{root / label}/"


def _caption_photo(image: Path, root: Path) -> Photo:
    label, label_from = _photo_label(image, root)
    return Photo(image, read_caption(image), label, label_from)


def read_caption(image: Path) -> str | None:
    """The text of `image`'s caption file (same name, `.txt`), stripped; `None` when missing or empty.

    Raises:
        UserError: the caption file is not UTF-8 or not a text (names the caption file).
    """
    caption = image.with_suffix(CAPTION_SUFFIX)
    if not caption.is_file():
        return None
    data = caption.read_bytes()
    try:
        text = clean_text(data.decode("utf-8-sig")).strip()
    except UnicodeDecodeError as error:
        raise UserError(
            f"not UTF-8 text (byte 0x{data[error.start]:02x} at position {error.start}); save the caption as UTF-8",
            path=caption,
        ) from None
    except InvalidTextError as error:
        raise UserError(f"the caption is {error.problem}", path=caption) from None
    return text or None


def _photos_from_metadata(
    metadata_files: list[Path],
    images: list[Path],
    text_column: str,
    label_column: str,
    split_folders: dict[str, Path] | None = None,
) -> list[Photo]:
    """The photos the metadata files list; each photo of the folder must be listed once.

    A photo's `file_name` is relative to its metadata file's folder and inside it. Without a label column, its
    label is its class folder under that folder, or under its split folder (`split_folders`) for a metadata file
    above the split folders.
    """
    split_folders = split_folders or {}
    split_roots = list(split_folders.values())
    listed: dict[Path, tuple[Path, int]] = {}
    photos = []
    for metadata in metadata_files:
        manifest = read_manifest(
            metadata, require_labels=False,
            columns={"image": FILE_NAME_COLUMN, "text": text_column, "label": label_column},
        )
        # A label column with no label in it (JSONL: no such key) leaves the labels to the class folders.
        has_labels = any(row.label is not None for row in manifest.rows)
        above_splits = any(path.parent == metadata.parent for path in split_roots)
        for row in manifest.rows:
            image = _listed_photo(row, metadata)
            # The folder whose folders are labels: the metadata file's, or the split folder of the photo.
            root = metadata.parent
            if above_splits:
                root = metadata.parent / image.relative_to(metadata.parent).parts[0]
                if root not in split_roots:
                    raise UserError(f"{FILE_NAME_COLUMN} {_file_name_cell(row)} is outside the split folders "
                                    f"({_folder_names(split_folders)})", path=metadata, row=row.line)
            if image in listed:
                first, line = listed[image]
                raise UserError(f"{image} is listed twice (first: {first}: line {line})", path=metadata, row=row.line)
            listed[image] = (metadata, row.line)
            if row.label is not None:
                label, label_from = row.label, f"{metadata}: line {row.line}"
            elif has_labels:
                raise UserError(f"empty {label_column}", path=metadata, row=row.line)
            else:
                label, label_from = _photo_label(image, root)
            photos.append(Photo(image, row.text, label, label_from))
    unlisted = [image for image in images if Path(os.path.normpath(image)) not in listed]
    if unlisted:
        more = f" (and {len(unlisted) - 1} more)" if len(unlisted) > 1 else ""
        raise UserError(
            f"no row in {', '.join(str(path) for path in metadata_files)}{more}: list every photo in the metadata",
            path=unlisted[0],
        )
    return sorted(photos, key=lambda photo: photo.image)


def _listed_photo(row, metadata: Path) -> Path:
    """The photo a metadata row names: a file inside the metadata file's folder, as imagefolder requires."""
    if row.image is None:
        raise UserError(f"empty {FILE_NAME_COLUMN}", path=metadata, row=row.line)
    written = _file_name_cell(row)
    if embedded_image_name(row.image) is not None:
        raise UserError(f"{FILE_NAME_COLUMN} holds image bytes, not a path: give the photo's path relative to "
                        "the metadata file", path=metadata, row=row.line)
    image = Path(os.path.normpath(row.image))
    if not image.is_relative_to(os.path.normpath(metadata.parent)):
        raise UserError(f"{FILE_NAME_COLUMN} {written} points outside {metadata.parent}/, the metadata file's "
                        "folder: give the photo's path inside it (imagefolder refuses it too)", path=metadata,
                        row=row.line)
    if not image.is_file():
        raise UserError(f"photo not found: {written}", path=metadata, row=row.line)
    return image


def _file_name_cell(row) -> str:
    """A metadata row's `file_name` as written."""
    return (row.cells or {}).get(FILE_NAME_COLUMN) or str(row.image)


def _split(photos: list[Photo], shares: dict[str, float], seed: int) -> tuple[dict[str, list[Photo]], dict[str, int]]:
    """The photos of each split (stratified by label), and the labels with too few photos to split."""
    by_label = defaultdict(list)
    for photo in photos:
        by_label[photo.label].append(photo)
    splits: dict[str, list[Photo]] = {split: [] for split in SPLITS}
    only_in_train = {}
    for label, group in sorted(by_label.items()):
        group = sorted(group, key=lambda photo: photo.image)
        # A string seed is hashed the same in every process (unlike hash()): one shuffle per label and seed.
        random.Random(f"{seed}:{label}").shuffle(group)
        sizes = {split: max(1, round(len(group) * share)) if share > 0 else 0 for split, share in shares.items()}
        if sizes["val"] + sizes["test"] >= len(group):
            only_in_train[label] = len(group)
            splits["train"] += group
            continue
        splits["val"] += group[: sizes["val"]]
        splits["test"] += group[sizes["val"] : sizes["val"] + sizes["test"]]
        splits["train"] += group[sizes["val"] + sizes["test"] :]
    return {split: sorted(members, key=lambda photo: photo.image) for split, members in splits.items()}, only_in_train


def _write_manifest(path: Path, photos: list[Photo]):
    """A CSV manifest of `photos`, image paths relative to its folder (an empty text cell: a missing text)."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["image", "text", "label"])
    manifest_folder = os.path.abspath(path.parent)
    for photo in photos:
        image = Path(os.path.relpath(os.path.abspath(photo.image), manifest_folder)).as_posix()
        writer.writerow([image, photo.text or "", photo.label])
    text = buffer.getvalue()
    write_atomically(path, lambda partial: partial.write_text(text, encoding="utf-8", newline=""))
