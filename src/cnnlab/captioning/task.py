"""Captioning as tasks of the engine: the generation model (teacher-forced cross-entropy over every reference of
every image) and the alignment model (the max-margin ranking loss over a batch of image–sentence pairs).

Batches are what :class:`~cnnlab.data.DeviceTensorLoader` yields:

- generation: (images (B, C, H, W), references (B, R, T) int64): each image encoded once, its R references
  decoded with teacher forcing (a missing reference is all ``<pad>`` and counts for nothing);
- alignment: (images, scene indices (B,)): the task keeps each split's references and boxes on the device and
  looks them up; one reference per image is drawn for each batch from the global RNG (which the engine saves and
  restores, so a resumed run draws the same ones).

``best.pt`` is the epoch with the lowest validation loss (generation: NLL per word) or validation image→sentence
miss rate at 1 (alignment), both on the held-out validation scenes; the test split is only reported
(``cnnlab caption eval``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from cnnlab.captioning.alignment import alignment_scores, ranking_loss, region_mask, retrieval, word_mask
from cnnlab.captioning.metrics import corpus_bleu
from cnnlab.captioning.model import reference_nll
from cnnlab.data.captions import START_ID, CaptionSplit, Vocabulary
from cnnlab.train import Task

if TYPE_CHECKING:
    from cnnlab.train.setup import TrainingRun

EVAL_SCENES = 500  # validation scenes decoded (greedy) for the epoch's BLEU; all of them for the loss
EVAL_BATCH = 250


def _batches(images: torch.Tensor, pre, device, size: int = EVAL_BATCH):
    """Normalised float batches of uint8 images (N, C, H, W), in order."""
    mean = torch.tensor(pre.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(pre.std, device=device).view(1, -1, 1, 1)
    for start in range(0, len(images), size):
        yield start, (images[start : start + size].to(device).float() / 255 - mean) / std


class CaptionTask(Task):
    """The generation model trained by teacher forcing.

    Args:
        model: a :class:`~cnnlab.captioning.model.CaptionModel`.
        vocabulary: its vocabulary (decodes the validation captions).
        val: the validation split (its loss and greedy BLEU-4 each epoch), or None.
        spec: what the checkpoint records about the model (:func:`cnnlab.captioning.runs.load_captioner` reads it).
    """

    name = "captioning"
    sums: ClassVar[Mapping[str, torch.dtype]] = {"nll": torch.float64, "words": torch.int64}
    resume_command = "cnnlab caption train --resume"

    def __init__(self, model: nn.Module, vocabulary: Vocabulary, val: CaptionSplit | None, spec: dict):
        self.models = {"model": model}
        self.vocabulary, self.val, self.spec = vocabulary, val, spec
        self.selection = "val_loss" if val is not None else None
        self._val_references: torch.Tensor | None = None

    def loss(self, part: str, nets: Mapping[str, Any], batch) -> tuple[torch.Tensor, dict]:
        images, references = batch
        logits = nets["model"](images, references)  # (N, T-1, V) over the present references
        mean, summed, words = reference_nll(logits, references)
        return mean, {"nll": summed.detach().double(), "words": words}

    def train_metrics(self, sums: Mapping[str, float], seen: int) -> dict[str, float]:
        loss = sums["nll"] / max(sums["words"], 1)
        return {"train_loss": loss, "train_perplexity": float(torch.tensor(loss).exp())}

    def progress_text(self, sums: Mapping[str, float], seen: int) -> str:
        return f"loss/word {sums['nll'] / max(sums['words'], 1):.4f}"

    def evaluate(self, nets: Mapping[str, nn.Module], run: TrainingRun, distributed: bool) -> dict[str, float]:
        if self.val is None:
            return {}
        model = nets["model"]
        if self._val_references is None:
            self._val_references = self.val.references(self.vocabulary)
        nll, words, hypotheses = 0.0, 0, []
        with torch.no_grad():
            for start, images in _batches(self.val.images, run.preprocessing, run.device):
                references = self._val_references[start : start + len(images)].to(run.device)
                _, summed, count = model.loss(images, references)
                nll, words = nll + float(summed), words + int(count)  # syncs: once per evaluation batch
                if start < EVAL_SCENES:
                    ids = model.greedy(images[: EVAL_SCENES - start])
                    hypotheses += [self.vocabulary.decode(row) for row in ids.tolist()]
        bleu = corpus_bleu(hypotheses, self.val.captions[: len(hypotheses)])
        return {"val_loss": nll / max(words, 1), "val_bleu4": bleu[4]}

    def epoch_text(self, row: Mapping[str, float]) -> str:
        text = f"train loss/word {row['train_loss']:.4f}"
        if "val_loss" in row:
            text += f"  val loss/word {row['val_loss']:.4f}  val BLEU-4 (greedy, {EVAL_SCENES}) {row['val_bleu4']:.3f}"
        return text

    def record(self, run: TrainingRun) -> dict:
        return {"captioner": dict(self.spec), "preprocessing": run.preprocessing.to_dict(), "data": run.config.data}


class AlignmentTask(Task):
    """The alignment model trained with the ranking loss.

    Args:
        model: an :class:`~cnnlab.captioning.alignment.AlignmentModel`.
        train: the training split (its references and boxes are looked up by the batches' scene indices).
        vocabulary: encodes the references.
        val: the validation split (retrieval each epoch), or None.
        spec: what the checkpoint records about the model.
    """

    name = "alignment"
    sums: ClassVar[Mapping[str, torch.dtype]] = {"loss": torch.float64, "top1": torch.int64}
    resume_command = "cnnlab caption train --resume"

    def __init__(self, model: nn.Module, train: CaptionSplit, vocabulary: Vocabulary, val: CaptionSplit | None,
                 spec: dict):  # fmt: skip
        self.models = {"model": model}
        self.vocabulary, self.val, self.spec = vocabulary, val, spec
        self.tables = split_tables(train, vocabulary)
        self.selection = "val_i2s_miss1" if val is not None else None

    def loss(self, part: str, nets: Mapping[str, Any], batch) -> tuple[torch.Tensor, dict]:
        images, index = batch
        references, boxes, valid = (t.to(images.device)[index] for t in self.tables)  # (B, R, T), (B, M, 4), (B, M)
        present = references[:, :, 0] == START_ID  # (B, R)
        draw = (torch.rand(len(index), device=images.device) * present.sum(1)).long()  # one present reference each
        tokens = references[torch.arange(len(index), device=images.device), draw]  # (B, T)
        scores = nets["model"](images, boxes, valid, tokens)  # (B, B)
        loss = ranking_loss(scores)
        with torch.no_grad():
            hits = (scores.argmax(1) == torch.arange(len(index), device=images.device)).sum()
        return loss, {"loss": loss.detach().double() * len(index), "top1": hits}

    def train_metrics(self, sums: Mapping[str, float], seen: int) -> dict[str, float]:
        return {"train_loss": sums["loss"] / max(seen, 1), "train_batch_r1": 100 * sums["top1"] / max(seen, 1)}

    def progress_text(self, sums: Mapping[str, float], seen: int) -> str:
        return f"loss {sums['loss'] / max(seen, 1):.4f} in-batch R@1 {100 * sums['top1'] / max(seen, 1):.1f}%"

    def evaluate(self, nets: Mapping[str, nn.Module], run: TrainingRun, distributed: bool) -> dict[str, float]:
        if self.val is None:
            return {}
        result = evaluate_retrieval(nets["model"], self.val, self.vocabulary, run.preprocessing, run.device,
                                    limit=EVAL_SCENES)  # fmt: skip
        i2s, s2i = result.image_to_sentence, result.sentence_to_image
        return {"val_i2s_miss1": 100 - i2s["r1"], "val_i2s_r1": i2s["r1"], "val_i2s_r10": i2s["r10"],
                "val_s2i_r1": s2i["r1"], "val_s2i_r10": s2i["r10"]}  # fmt: skip

    def epoch_text(self, row: Mapping[str, float]) -> str:
        text = f"train loss {row['train_loss']:.4f}"
        if "val_i2s_r1" in row:
            text += (f"  val ({EVAL_SCENES} scenes) image→sentence R@1 {row['val_i2s_r1']:.1f}% R@10 "
                     f"{row['val_i2s_r10']:.1f}%  sentence→image R@1 {row['val_s2i_r1']:.1f}%")  # fmt: skip
        return text

    def record(self, run: TrainingRun) -> dict:
        return {"captioner": dict(self.spec), "preprocessing": run.preprocessing.to_dict(), "data": run.config.data}


def split_tables(split: CaptionSplit, vocabulary: Vocabulary) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(references (N, R, T), boxes (N, M, 4), valid (N, M)) of a split with boxes."""
    if split.boxes is None or split.labels is None:
        from cnnlab.errors import DataError

        raise DataError("The alignment model needs each image's object boxes; this caption dataset has none.")
    return split.references(vocabulary), split.boxes, split.labels >= 0


def embed_split(model, split: CaptionSplit, vocabulary: Vocabulary, pre, device, limit: int | None = None,
                boxes: tuple[torch.Tensor, torch.Tensor] | None = None):  # fmt: skip
    """(regions (K, R, D), regions present, words (L, T, D), words present, owner (L,)) of a split's first
    ``limit`` scenes and all their references, from the model in its current mode without gradients.

    ``boxes``: (boxes (K, M, 4), valid (K, M)) to take instead of the split's (e.g. region proposals)."""
    count = len(split) if limit is None else min(limit, len(split))
    references = split.references(vocabulary)[:count]
    boxes, valid = (t[:count] for t in (boxes if boxes is not None else split_tables(split, vocabulary)[1:]))
    regions, words = [], []
    with torch.no_grad():
        for start, images in _batches(split.images[:count], pre, device):
            end = start + len(images)
            regions.append(model.regions(images, boxes[start:end].to(device), valid[start:end].to(device)))
        present = references[:, :, 0] == START_ID  # (K, R)
        tokens = references[present].to(device)  # (L, T)
        for start in range(0, len(tokens), 1000):
            words.append(model.words(tokens[start : start + 1000]))
    owner = present.nonzero()[:, 0].to(device)
    return torch.cat(regions), region_mask(valid.to(device)), torch.cat(words), word_mask(tokens), owner


def evaluate_retrieval(model, split: CaptionSplit, vocabulary: Vocabulary, pre, device, limit: int | None = None,
                       boxes: tuple[torch.Tensor, torch.Tensor] | None = None):  # fmt: skip
    """Image→sentence and sentence→image retrieval over a split's first ``limit`` scenes and their references
    (regions: the split's boxes, or ``boxes`` as :func:`embed_split` takes them)."""
    regions, regions_present, words, words_present, owner = embed_split(model, split, vocabulary, pre, device, limit,
                                                                        boxes)  # fmt: skip
    return retrieval(alignment_scores(regions, regions_present, words, words_present), owner)
