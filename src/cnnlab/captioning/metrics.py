"""Caption metrics and the image-only baseline.

BLEU (Papineni et al. 2002) is torchmetrics' :class:`~torchmetrics.text.BLEUScore`: corpus BLEU-n with several
references per image (n-gram counts clipped by the most any one reference has; the brevity penalty from the
reference closest in length), uniform weights over 1…n-grams, on whitespace tokens (our captions are tokenised
and joined by spaces by :func:`~cnnlab.data.captions.tokenize` / ``detokenize`` before scoring). CIDEr-D is not
computed (pycocoevalcap's needs Java for its tokeniser).

The baseline (Karpathy & Fei-Fei compare with nearest-neighbour retrieval; ours names only what is in the
image): for each scene, the most common training caption among training scenes holding the same objects
(the same multiset of classes), else the same number of objects; given the scene's ground-truth objects, it is an
upper bound of "the most common caption for the predicted objects".
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch

from cnnlab.data.captions import CaptionSplit, detokenize, tokenize
from cnnlab.errors import DataError


def _normalise(text: str) -> str:
    return detokenize(tokenize(text))


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[Sequence[str]], max_n: int = 4) -> dict[int, float]:
    """Corpus BLEU-1 … BLEU-``max_n`` of ``hypotheses`` against each one's references: ``{n: score in [0, 1]}``.

    Raises:
        DataError: not one reference list per hypothesis, or an empty reference list.
    """
    from torchmetrics.functional.text import bleu_score

    if len(hypotheses) != len(references):
        raise DataError(f"{len(hypotheses)} captions but references for {len(references)}; give one list each.")
    if any(len(refs) == 0 for refs in references):
        raise DataError("Every caption needs at least one reference.")
    if not hypotheses:
        return {n: 0.0 for n in range(1, max_n + 1)}
    preds = [_normalise(h) for h in hypotheses]
    targets = [[_normalise(r) for r in refs] for refs in references]
    return {n: float(bleu_score(preds, targets, n_gram=n)) for n in range(1, max_n + 1)}


def sentence_bleu(hypothesis: str, references: Sequence[str], n: int = 4) -> float:
    """Smoothed sentence BLEU-n (Lin & Och 2004's +1 smoothing, torchmetrics' ``smooth=True``): ranks single
    captions (the report's best and worst), where unsmoothed BLEU-4 is 0 for most imperfect ones."""
    from torchmetrics.functional.text import bleu_score

    return float(bleu_score([_normalise(hypothesis)], [[_normalise(r) for r in references]], n_gram=n, smooth=True))


def object_key(labels: torch.Tensor) -> tuple[int, ...]:
    """The multiset of a scene's object classes (labels ≥ 0), sorted."""
    return tuple(sorted(int(x) for x in labels.tolist() if x >= 0))


def most_common_captions(train: CaptionSplit, scenes_labels: torch.Tensor) -> list[str]:
    """The baseline's caption for each of ``scenes_labels`` (N, M) (see the module docstring): the most common
    training caption of training scenes with the same objects, else of scenes with as many objects, else of all.
    Ties go to the caption seen first (deterministic)."""
    if train.labels is None:
        raise DataError("The most-common-caption baseline needs object labels; this caption dataset has none.")
    by_objects: dict[tuple[int, ...], Counter] = {}
    by_count: dict[int, Counter] = {}
    overall: Counter = Counter()
    for labels, refs in zip(train.labels, train.captions, strict=True):
        key = object_key(labels)
        by_objects.setdefault(key, Counter()).update(refs)
        by_count.setdefault(len(key), Counter()).update(refs)
        overall.update(refs)
    out = []
    for labels in scenes_labels:
        key = object_key(labels)
        counter = by_objects.get(key) or by_count.get(len(key)) or overall
        out.append(counter.most_common(1)[0][0])
    return out
