"""Captioned images: tokenisation, the vocabulary, caption datasets and their registry.

Everything a captioning model needs from text is handled here, once:

- :func:`tokenize`: lower case, words (letters and digits, inner hyphens and apostrophes kept: ``t-shirt``,
  ``man's``) and each punctuation mark as its own token; :func:`detokenize` joins tokens with spaces, so
  ``tokenize(detokenize(tokens)) == tokens`` for any tokenised caption.
- :class:`Vocabulary`: the words seen at least ``min_count`` times in the training captions, after four special
  tokens at fixed ids (``<pad>`` 0, ``<start>`` 1, ``<end>`` 2, ``<unk>`` 3); :meth:`Vocabulary.encode` turns
  captions into a padded int64 tensor ``<start> w1 … wn <end> <pad>…``, :meth:`Vocabulary.decode` turns ids back
  into text (stopping at ``<end>``).
- :class:`CaptionSplit` / :class:`CaptionDataset`: uint8 images (N, C, H, W) with 1 or more reference captions
  each, and, for generated scenes, the objects' ground-truth boxes and classes (what the alignment model uses
  as regions and the baseline as "the objects in the image").

Datasets by name (:func:`list_caption_datasets`): ``captioned-scenes`` and ``captioned-fashion-scenes``
(:mod:`cnnlab.data.caption_scenes`, generated from the local MNIST / Fashion-MNIST). Caption files in the formats
people bring (Flickr8k/30k token files, Karpathy's split JSON, COCO captions JSON) are read by
:mod:`cnnlab.data.caption_readers`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch

from cnnlab.data.datasets import default_data_root
from cnnlab.errors import ConfigError, DataError, UnknownNameError

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIALS = (PAD, START, END, UNK)  # ids 0, 1, 2, 3 in every vocabulary
PAD_ID, START_ID, END_ID, UNK_ID = range(4)

_TOKEN = re.compile(r"[a-z0-9]+(?:['\-][a-z0-9]+)*|[^\sa-z0-9]")


def tokenize(text: str) -> list[str]:
    """Lower-cased words and punctuation marks of ``text``.

    >>> tokenize("A small 3, to the left of a T-shirt.")
    ['a', 'small', '3', ',', 'to', 'the', 'left', 'of', 'a', 't-shirt', '.']
    """
    if not isinstance(text, str):
        raise DataError(f"A caption must be text, got {type(text).__name__}: {text!r}.")
    return _TOKEN.findall(text.lower())


def detokenize(tokens: Iterable[str]) -> str:
    """Tokens joined by single spaces (what :func:`tokenize` splits back into the same tokens)."""
    return " ".join(tokens)


@dataclass(frozen=True)
class Vocabulary:
    """Token ↔ id. ``tokens[i]`` is the token of id ``i``; the four specials come first.

    Attributes:
        tokens: the specials, then the kept words (most frequent first, ties alphabetical).
        min_count: how often a word had to occur in the captions it was built from to be kept.
    """

    tokens: tuple[str, ...]
    min_count: int = 1
    index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if tuple(self.tokens[:4]) != SPECIALS:
            raise DataError(f"A vocabulary starts with {SPECIALS}, got {tuple(self.tokens[:4])}.")
        if len(set(self.tokens)) != len(self.tokens):
            raise DataError("A vocabulary lists each token once.")
        object.__setattr__(self, "index", {t: i for i, t in enumerate(self.tokens)})

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 1) -> Vocabulary:
        """The vocabulary of ``captions`` (texts): words seen at least ``min_count`` times; rarer ones will be
        ``<unk>``."""
        if not isinstance(min_count, int) or min_count < 1:
            raise ConfigError(f"min_count must be a whole number ≥ 1, got {min_count!r}.")
        counts = Counter(token for caption in captions for token in tokenize(caption))
        kept = sorted((t for t, c in counts.items() if c >= min_count and t not in SPECIALS),
                      key=lambda t: (-counts[t], t))  # fmt: skip
        return cls((*SPECIALS, *kept), min_count)

    def __len__(self) -> int:
        return len(self.tokens)

    def ids(self, caption: str) -> list[int]:
        """Word ids of ``caption`` (no ``<start>``/``<end>``); unknown words are ``<unk>``."""
        return [self.index.get(token, UNK_ID) for token in tokenize(caption)]

    def encode(self, captions: Sequence[str], length: int | None = None) -> torch.Tensor:
        """int64 (len(captions), length): ``<start> w1 … wn <end>`` then ``<pad>``; ``length`` defaults to the
        longest caption + 2.

        Raises:
            DataError: a caption longer than ``length`` − 2 words.
        """
        rows = [self.ids(c) for c in captions]
        length = max((len(r) for r in rows), default=0) + 2 if length is None else length
        out = torch.full((len(rows), length), PAD_ID, dtype=torch.int64)
        for i, row in enumerate(rows):
            if len(row) + 2 > length:
                raise DataError(f"Caption {captions[i]!r} has {len(row)} words; at most {length - 2} fit.")
            out[i, : len(row) + 2] = torch.tensor([START_ID, *row, END_ID])
        return out

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ids: specials dropped, stopping at the first ``<end>``."""
        words = []
        for i in ids:
            i = int(i)
            if i == END_ID:
                break
            if i >= len(self.tokens) or i < 0:
                raise DataError(f"Token id {i} is outside this vocabulary of {len(self.tokens)} tokens.")
            if i not in (PAD_ID, START_ID):
                words.append(self.tokens[i])
        return detokenize(words)

    def to_list(self) -> list[str]:
        """The tokens in id order (what a checkpoint stores)."""
        return list(self.tokens)


@dataclass
class CaptionSplit:
    """Images and their reference captions.

    Attributes:
        images: uint8 (N, C, H, W).
        captions: N lists of reference captions (texts), at least one each.
        boxes: float (N, M, 4) XYXY pixel boxes of the objects (generated scenes), zero rows for padding; or None.
        labels: int64 (N, M) the objects' classes, −1 for padding; or None.
        names: one name per image (file names for read datasets), or None.
    """

    images: torch.Tensor
    captions: list[list[str]]
    boxes: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    names: list[str] | None = None

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise DataError(f"Images must be a uint8 (N, C, H, W) tensor, got {self.images.dtype} {self.images.shape}.")
        if len(self.captions) != len(self.images):
            raise DataError(f"{len(self.images)} images but captions for {len(self.captions)}; give one list each.")
        empty = next((i for i, refs in enumerate(self.captions) if not refs), None)
        if empty is not None:
            raise DataError(f"Image {empty} has no reference caption; every image needs at least one.")

    def __len__(self) -> int:
        return self.images.shape[0]

    def references(self, vocabulary: Vocabulary, length: int | None = None) -> torch.Tensor:
        """int64 (N, R, T): every image's references encoded (R = the most any image has; missing ones all
        ``<pad>``)."""
        most = max(len(refs) for refs in self.captions)
        flat = [refs[r] if r < len(refs) else "" for refs in self.captions for r in range(most)]
        encoded = vocabulary.encode(flat, length)
        empty = torch.tensor([r >= len(refs) for refs in self.captions for r in range(most)])
        encoded[empty] = PAD_ID  # a missing reference is all padding (no <start>): the loss skips it
        return encoded.view(len(self), most, -1)


@dataclass
class CaptionDataset:
    """Train, validation and test splits of captioned images.

    Attributes:
        name: the name it was loaded by.
        train, val, test: the splits (``val`` chooses hyperparameters and checkpoints; the test split is reported).
        classes: the object classes of ``labels`` (generated scenes), or empty.
        source: where the data came from.
        notes: facts worth printing with it.
    """

    name: str
    train: CaptionSplit
    val: CaptionSplit | None
    test: CaptionSplit
    classes: list[str] = field(default_factory=list)
    source: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.images.shape[1:])  # type: ignore[return-value]

    def vocabulary(self, min_count: int = 1) -> Vocabulary:
        """The vocabulary of the *training* captions (validation and test words it lacks become ``<unk>``)."""
        return Vocabulary.build((c for refs in self.train.captions for c in refs), min_count)


# ---- the registry -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CaptionDatasetInfo:
    """A registered caption dataset: ``loader(root, *, seed, **options)``, a description, its options' dataclass."""

    name: str
    loader: Callable[..., CaptionDataset] = field(repr=False)
    description: str
    options: type | None = None

    def option_names(self) -> list[str]:
        return [f.name for f in fields(self.options)] if self.options is not None else []


_CAPTION_DATASETS: dict[str, CaptionDatasetInfo] = {}


def register_caption_dataset(name: str, description: str, options: type | None = None) -> Callable:
    """Decorator registering ``loader(root: Path, *, seed: int, **options) -> CaptionDataset`` under ``name``;
    registering a name twice is an error."""

    def decorator(loader: Callable[..., CaptionDataset]) -> Callable[..., CaptionDataset]:
        if name in _CAPTION_DATASETS:
            raise DataError(f"Caption dataset name {name!r} is already registered.")
        _CAPTION_DATASETS[name] = CaptionDatasetInfo(name, loader, description, options)
        return loader

    return decorator


def list_caption_datasets() -> list[str]:
    """Registered caption dataset names."""
    return sorted(_CAPTION_DATASETS)


def is_caption_dataset(name: str) -> bool:
    return name in _CAPTION_DATASETS


def get_caption_dataset_info(name: str) -> CaptionDatasetInfo:
    if name not in _CAPTION_DATASETS:
        raise UnknownNameError("caption dataset", name, list_caption_datasets())
    return _CAPTION_DATASETS[name]


def load_caption_dataset(name: str, root: str | Path | None = None, *, seed: int = 0, **options) -> CaptionDataset:
    """Load (or generate) a caption dataset by name.

    Args:
        name: ``captioned-scenes`` or ``captioned-fashion-scenes`` (:func:`list_caption_datasets`).
        root: data root of the source images (default ``$CNNLAB_DATA`` or ``~/.cache/cnnlab``); read in place.
        seed: seed of generated scenes (same seed: identical tensors and captions).
        **options: the loader's options (:class:`~cnnlab.data.caption_scenes.SceneConfig` fields); unknown ones
            are refused.

    Raises:
        UnknownNameError, ConfigError, DataError.
    """
    info = get_caption_dataset_info(name)
    unknown = sorted(set(options) - set(info.option_names()))
    if unknown:
        takes = ", ".join(info.option_names()) or "none"
        raise ConfigError(f"{name} does not take option(s) {', '.join(unknown)}; it takes: {takes}.")
    root_path = Path(root).expanduser() if root is not None else default_data_root()
    return info.loader(root_path, seed=seed, **options)
