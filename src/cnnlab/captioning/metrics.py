"""Caption metrics and the image-only baseline.

BLEU (Papineni et al. 2002) is torchmetrics' :class:`~torchmetrics.text.BLEUScore`: corpus BLEU-n with several
references per image (n-gram counts clipped by the most any one reference has; the brevity penalty from the
reference closest in length), uniform weights over 1…n-grams, on whitespace tokens (our captions are tokenised
and joined by spaces by :func:`~cnnlab.data.captions.tokenize` / ``detokenize`` before scoring).

CIDEr-D (Vedantam, Zitnick & Parikh 2015, "CIDEr: consensus-based image description evaluation", the "-D" variant
of the COCO evaluation server) is :func:`cider_d`, written here because no maintained package has it without
the rest of coco-caption (pycocoevalcap's pipeline runs a Java tokeniser and pulls pycocotools); its scorer
is the test oracle (tests/test_captioning.py). For each n = 1…4: every caption is a vector of its n-grams'
tf-idf weights, g(w) = count(w) · (log N − log max(1, df(w))), df the number of images whose references hold
w, N the images scored; a caption's score against one reference is the cosine of their vectors with the
candidate's weights clipped at the reference's (min(g_c, g_r) · g_r: repeating a word gains nothing),
times a Gaussian length penalty exp(−(l_c − l_r)² / 2σ²), σ = 6 words; the score is the mean over n and over
the references, × 10. Tokens as for BLEU (the listing's commas count; coco-caption's PTB tokeniser would drop
them).

The baseline (Karpathy & Fei-Fei compare with nearest-neighbour retrieval; ours names only what is in the
image): for each scene, the most common training caption among training scenes holding the same objects
(the same multiset of classes), else the same number of objects; given the scene's ground-truth objects, it is an
upper bound of "the most common caption for the predicted objects".
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch

from cnnlab.data.captions import CaptionSplit, detokenize, tokenize
from cnnlab.errors import DataError


def _normalise(text: str) -> str:
    return detokenize(tokenize(text))


def _check_references(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> None:
    if len(hypotheses) != len(references):
        raise DataError(f"{len(hypotheses)} captions but references for {len(references)}; give one list each.")
    if any(len(refs) == 0 for refs in references):
        raise DataError("Every caption needs at least one reference.")


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[Sequence[str]], max_n: int = 4) -> dict[int, float]:
    """Corpus BLEU-1 … BLEU-``max_n`` of ``hypotheses`` against each one's references: ``{n: score in [0, 1]}``.

    Raises:
        DataError: not one reference list per hypothesis, or an empty reference list.
    """
    from torchmetrics.functional.text import bleu_score

    _check_references(hypotheses, references)
    if not hypotheses:
        return {n: 0.0 for n in range(1, max_n + 1)}
    preds = [_normalise(h) for h in hypotheses]
    targets = [[_normalise(r) for r in refs] for refs in references]
    return {n: float(bleu_score(preds, targets, n_gram=n)) for n in range(1, max_n + 1)}


def _ngram_counts(tokens: list[str], max_n: int) -> list[Counter]:
    """[Counter of 1-grams, …, of max_n-grams] of one tokenised caption."""
    return [Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)) for n in range(1, max_n + 1)]


def cider_d(hypotheses: Sequence[str], references: Sequence[Sequence[str]], max_n: int = 4,
            sigma: float = 6.0) -> tuple[float, np.ndarray]:  # fmt: skip
    """CIDEr-D of ``hypotheses`` against each one's references (module docstring): (corpus score, the (N,) scores
    of each image); the corpus score is their mean. The document frequencies come from these references, so a
    score depends on the set scored (as coco-caption's does).

    Args:
        max_n: longest n-gram.
        sigma: the length penalty's standard deviation, in words.

    Raises:
        DataError: not one reference list per hypothesis, or an empty reference list.
    """
    _check_references(hypotheses, references)
    if not hypotheses:
        return 0.0, np.zeros(0)
    hyp_tokens = [tokenize(h) for h in hypotheses]
    ref_tokens = [[tokenize(r) for r in refs] for refs in references]
    hyp_counts = [_ngram_counts(t, max_n) for t in hyp_tokens]
    ref_counts = [[_ngram_counts(t, max_n) for t in refs] for refs in ref_tokens]
    document_frequency: Counter = Counter()  # n-gram -> images whose references hold it
    for refs in ref_counts:
        document_frequency.update({gram for counts in refs for order in counts for gram in order})
    log_images = math.log(len(hypotheses))

    def weights(counts: list[Counter]) -> tuple[list[dict], np.ndarray]:
        """tf-idf vectors (one dict per n) and their norms (max_n,)."""
        vectors = [{g: tf * (log_images - math.log(max(1.0, document_frequency[g]))) for g, tf in order.items()}
                   for order in counts]  # fmt: skip
        return vectors, np.array([math.sqrt(sum(w * w for w in v.values())) for v in vectors])

    scores = np.zeros(len(hypotheses))
    for i, (hyp, refs) in enumerate(zip(hyp_counts, ref_counts, strict=True)):
        hyp_vectors, hyp_norms = weights(hyp)
        total = np.zeros(max_n)  # summed over the references, per n
        for ref, tokens in zip(refs, ref_tokens[i], strict=True):
            ref_vectors, ref_norms = weights(ref)
            penalty = math.exp(-((len(hyp_tokens[i]) - len(tokens)) ** 2) / (2 * sigma**2))
            for n in range(max_n):
                dot = sum(min(w, ref_vectors[n].get(g, 0.0)) * ref_vectors[n].get(g, 0.0)
                          for g, w in hyp_vectors[n].items())  # fmt: skip
                if hyp_norms[n] > 0 and ref_norms[n] > 0:
                    total[n] += dot / (hyp_norms[n] * ref_norms[n]) * penalty
        scores[i] = 10.0 * total.mean() / len(refs)
    return float(scores.mean()), scores


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
