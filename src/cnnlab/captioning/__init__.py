"""Image captioning (Karpathy & Fei-Fei 2015; Vinyals et al. 2015): a zoo CNN feeding an LSTM that writes the
description, and the alignment model that embeds image regions and words in one space.

>>> from cnnlab import captioning
>>> result = captioning.train_captioner({"data": "captioned-scenes", "epochs": 12})  # `cnnlab caption train`
>>> captioning.evaluate_captioner(result.run.run_dir.path, beam=3).bleu           # `cnnlab caption eval RUN`
>>> captioning.predict_captions(result.run.run_dir.path, ["scene.png"])            # `cnnlab caption predict RUN IMG`

Both models are engine tasks (:class:`CaptionTask`, :class:`AlignmentTask`): checkpoints, exact resume, AMP and
the rest come with them. Data, tokenisation and the vocabulary live in :mod:`cnnlab.data.captions`.
"""

from cnnlab.captioning.alignment import (
    AlignmentModel,
    Retrieval,
    alignment_scores,
    best_regions,
    ranking_loss,
    retrieval,
)
from cnnlab.captioning.metrics import cider_d, corpus_bleu, most_common_captions, sentence_bleu
from cnnlab.captioning.model import CaptionModel, reference_nll
from cnnlab.captioning.runs import (
    CAPTION_DEFAULTS,
    CAPTION_FLAGS,
    Captioner,
    CaptionEvaluation,
    CaptionOptions,
    CaptionPrediction,
    CaptionTrainResult,
    build_captioner,
    evaluate_captioner,
    load_captioner,
    predict_captions,
    train_captioner,
)
from cnnlab.captioning.task import AlignmentTask, CaptionTask

__all__ = [
    "CAPTION_DEFAULTS",
    "CAPTION_FLAGS",
    "AlignmentModel",
    "AlignmentTask",
    "CaptionEvaluation",
    "CaptionModel",
    "CaptionOptions",
    "CaptionPrediction",
    "CaptionTask",
    "CaptionTrainResult",
    "Captioner",
    "Retrieval",
    "alignment_scores",
    "best_regions",
    "build_captioner",
    "cider_d",
    "corpus_bleu",
    "evaluate_captioner",
    "load_captioner",
    "most_common_captions",
    "predict_captions",
    "ranking_loss",
    "reference_nll",
    "retrieval",
    "sentence_bleu",
    "train_captioner",
]
