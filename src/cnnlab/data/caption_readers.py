"""Caption files in the formats people bring, read into one shape (:class:`CaptionFile`: image file name → its
captions, and each image's split where the file says).

- :func:`read_flickr_tokens`: Flickr8k's ``Flickr8k.token.txt`` / Flickr30k's ``results_20130124.token``, one
  caption per line: ``<image>#<n>\\t<caption>``.
- :func:`read_karpathy_split`: Karpathy's split files ``dataset_{flickr8k,flickr30k,coco}.json``:
  ``{"images": [{"filename", "filepath"?, "split", "sentences": [{"raw", "tokens"}]}]}``; ``restval`` (COCO's
  extra training images) counts as ``train``.
- :func:`read_coco_captions`: COCO's ``captions_{train,val}2014.json``: ``images`` (``id``, ``file_name``) and
  ``annotations`` (``image_id``, ``caption``).

Captions are kept as written; :func:`cnnlab.data.captions.tokenize` and
:class:`~cnnlab.data.captions.Vocabulary` are applied by whoever trains on them. Bad input is a
:class:`~cnnlab.errors.DataError` naming the file and the line or entry. Images are not read here (the photo
sets are not bundled); pair the names with your image folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from cnnlab.errors import DataError

SPLITS = ("train", "val", "test")


@dataclass
class CaptionFile:
    """Captions read from one file.

    Attributes:
        captions: image file name → its captions, in file order (images in first-seen order).
        splits: image file name → ``train``, ``val`` or ``test``, where the file says (Karpathy's JSON); else empty.
        source: the file read.
    """

    captions: dict[str, list[str]]
    splits: dict[str, str] = field(default_factory=dict)
    source: str = ""

    def __len__(self) -> int:
        return len(self.captions)

    def split(self, name: str) -> dict[str, list[str]]:
        """The images of split ``name`` and their captions."""
        if name not in SPLITS:
            raise DataError(f"A split is one of {', '.join(SPLITS)}, got {name!r}.")
        return {image: caps for image, caps in self.captions.items() if self.splits.get(image) == name}


def _text(path: str | Path) -> tuple[Path, str]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"Caption file {path} does not exist.")
    return path, path.read_text(encoding="utf-8")


def _json(path: str | Path) -> tuple[Path, dict]:
    path, text = _text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(f"{path} is not valid JSON ({error}).") from error
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(f'{path} has no "images" list; is it a caption JSON?')
    return path, data


def read_flickr_tokens(path: str | Path) -> CaptionFile:
    """A Flickr8k/30k token file (``<image>#<n>\\t<caption>`` per line; blank lines skipped).

    Raises:
        DataError: a missing file, or a line without the tab or the ``#<n>``, or with an empty caption (named).
    """
    path, text = _text(path)
    captions: dict[str, list[str]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        key, tab, caption = line.partition("\t")
        image, hash_mark, index = key.rpartition("#")
        if not tab or not hash_mark or not index.strip().isdigit() or not image:
            raise DataError(f"{path}, line {number}: expected '<image>#<n><TAB><caption>', got {line[:80]!r}.")
        if not caption.strip():
            raise DataError(f"{path}, line {number}: the caption of {image} is empty.")
        captions.setdefault(image, []).append(caption.strip())
    return CaptionFile(captions, {}, str(path))


def read_karpathy_split(path: str | Path) -> CaptionFile:
    """A Karpathy split JSON (``dataset_flickr8k.json`` …): captions and each image's split.

    Raises:
        DataError: not such a JSON, an image without ``filename`` or with an unknown split, a sentence with
            neither ``raw`` nor ``tokens``.
    """
    path, data = _json(path)
    captions: dict[str, list[str]] = {}
    splits: dict[str, str] = {}
    for i, entry in enumerate(data["images"]):
        name = entry.get("filename") if isinstance(entry, dict) else None
        if not name:
            raise DataError(f'{path}: images[{i}] has no "filename".')
        split = {"restval": "train"}.get(entry.get("split"), entry.get("split"))
        if split not in SPLITS:
            raise DataError(f"{path}: {name} has split {entry.get('split')!r}; expected train, restval, val or test.")
        texts = []
        for j, sentence in enumerate(entry.get("sentences", [])):
            raw = sentence.get("raw") or " ".join(sentence.get("tokens", []))
            if not raw.strip():
                raise DataError(f'{path}: {name}, sentences[{j}] has neither "raw" text nor "tokens".')
            texts.append(raw.strip())
        if not texts:
            raise DataError(f"{path}: {name} has no sentences.")
        captions[name], splits[name] = texts, split
    return CaptionFile(captions, splits, str(path))


def read_coco_captions(path: str | Path) -> CaptionFile:
    """A COCO captions JSON (``captions_train2014.json`` …): each image's captions, in annotation order.

    Raises:
        DataError: not such a JSON, an annotation for an image id the file does not list (named).
    """
    path, data = _json(path)
    names = {}
    for i, image in enumerate(data["images"]):
        if not isinstance(image, dict) or "id" not in image or "file_name" not in image:
            raise DataError(f'{path}: images[{i}] needs "id" and "file_name".')
        names[image["id"]] = image["file_name"]
    captions: dict[str, list[str]] = {name: [] for name in names.values()}
    for i, annotation in enumerate(data.get("annotations", [])):
        image_id, caption = annotation.get("image_id"), annotation.get("caption")
        if image_id not in names:
            raise DataError(f'{path}: annotations[{i}] refers to image id {image_id!r}, which "images" lacks.')
        if not isinstance(caption, str) or not caption.strip():
            raise DataError(f"{path}: annotations[{i}] (image {names[image_id]}) has no caption text.")
        captions[names[image_id]].append(caption.strip())
    return CaptionFile({k: v for k, v in captions.items() if v}, {}, str(path))
