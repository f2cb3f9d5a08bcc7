"""Karpathy & Fei-Fei 2015, "Deep visual-semantic alignments for generating image descriptions", section 3.1:
image regions and sentence words embedded in one space, and which word goes with which region.

- **Regions** (3.1.1): the whole image and each object's box (the scenes' ground-truth boxes; the paper's top 19
  R-CNN detections), each cropped square around the box with :func:`torchvision.ops.roi_align` at
  ``region_size`` px, through a zoo CNN (the model contract's pooled vector), then v = W_m·[CNN(crop); geometry] +
  b_m. The geometry (the box's corners over the image size) is our addition: a crop resized to one size forgets
  how big the object was and where, which our grammar names ("small", "to the left of").
- **Words** (3.1.2): a bidirectional RNN over the word embeddings, ReLU units as in the paper (eq. 2–6):
  s_t = ReLU(W_d(h_t^f + h_t^b) + b_d).
- **Score** (eq. 8): S_kl = Σ_{t ∈ g_l} max_{i ∈ g_k} v_iᵀ s_t: every word of sentence l picks its best region of
  image k.
- **Loss** (eq. 9): C = Σ_k [Σ_{l≠k} max(0, S_kl − S_kk + 1) + Σ_{l≠k} max(0, S_lk − S_kk + 1)] over a batch of
  corresponding (image, sentence) pairs: each true pair beats every other sentence and every other image by a
  margin of 1. Divided by the batch size here (the engine wants a mean).
- **Retrieval** (table 1): image→sentence (rank of the first true sentence among all), sentence→image (rank of its
  image); R@1, R@5, R@10 (percent) and the median rank.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.captioning.model import encoder_features, feature_width
from cnnlab.data.captions import END_ID, PAD_ID, START_ID
from cnnlab.errors import ConfigError

GEOMETRY = 4  # box corners / image size, appended to each region's CNN vector


def square_boxes(boxes: torch.Tensor, margin: float = 0.15) -> torch.Tensor:
    """Squares around (…, 4) XYXY ``boxes``, side (1 + 2·margin)·max(w, h), centred (crops keep their aspect; one
    may reach past the image's edge, where roi_align samples zeros: the scenes' black background)."""
    centre = (boxes[..., :2] + boxes[..., 2:]) / 2
    half = (boxes[..., 2:] - boxes[..., :2]).amax(-1, keepdim=True) * (0.5 + margin)
    return torch.cat([centre - half, centre + half], -1)


class AlignmentModel(nn.Module):
    """Region and word embeddings in one space (see the module docstring).

    Args:
        encoder: a zoo model taking ``region_size`` crops.
        in_chans: image channels.
        vocab_size: tokens of the vocabulary.
        region_size: side of every region crop, px.
        embed_dim: the shared space's width (the paper: 1000–1600).
        word_dim: width of the word vectors the BRNN reads.
    """

    def __init__(
        self,
        encoder: nn.Module,
        in_chans: int,
        vocab_size: int,
        region_size: int = 32,
        embed_dim: int = 256,
        word_dim: int = 128,
    ):
        super().__init__()
        self.encoder, self.in_chans, self.region_size = encoder, in_chans, region_size
        self.vocab_size, self.embed_dim = vocab_size, embed_dim
        width = feature_width(encoder, (in_chans, region_size, region_size))
        self.region_projection = nn.Linear(width + GEOMETRY, embed_dim)  # W_m, b_m
        self.embedding = nn.Embedding(vocab_size, word_dim, padding_idx=PAD_ID)  # W_w
        self.brnn = nn.RNN(word_dim, embed_dim, nonlinearity="relu", batch_first=True, bidirectional=True)
        self.word_projection = nn.Linear(embed_dim, embed_dim)  # W_d, b_d

    def regions(self, images: torch.Tensor, boxes: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Region vectors: the whole image, then each box.

        Args:
            images: (B, C, H, W) normalised images.
            boxes: (B, M, 4) XYXY pixel boxes.
            valid: (B, M) bool, False for padding.

        Returns:
            (B, 1 + M, D); rows of padding boxes are computed on an empty box and must be masked by the caller.
        """
        from torchvision.ops import roi_align

        b, _, h, w = images.shape
        whole = torch.tensor([0.0, 0.0, w, h], device=images.device).expand(b, 1, 4)
        crops = torch.cat([whole, square_boxes(boxes.float())], 1)  # (B, 1+M, 4)
        crops = torch.where(torch.cat([torch.ones_like(valid[:, :1]), valid], 1)[..., None], crops, whole)
        indexed = torch.cat([torch.arange(b, device=images.device).repeat_interleave(crops.shape[1])[:, None].float(),
                             crops.reshape(-1, 4)], 1)  # fmt: skip
        pixels = roi_align(images, indexed, self.region_size, spatial_scale=1.0, sampling_ratio=2, aligned=True)
        features = encoder_features(self.encoder, pixels)  # (B*(1+M), F)
        geometry = torch.cat([whole, boxes.float()], 1).reshape(-1, 4) / torch.tensor(
            [w, h, w, h], device=images.device
        )
        return self.region_projection(torch.cat([features, geometry], 1)).view(b, crops.shape[1], -1)

    def words(self, tokens: torch.Tensor) -> torch.Tensor:
        """Word vectors s_t: (N, T) ``<start> w1 … <end> <pad>`` -> (N, T, D) (specials included; see
        :func:`word_mask`)."""
        hidden, _ = self.brnn(self.embedding(tokens))  # (N, T, 2D): forward and backward states
        forward, backward = hidden.chunk(2, -1)
        return F.relu(self.word_projection(forward + backward))

    def forward(self, images: torch.Tensor, boxes: torch.Tensor, valid: torch.Tensor, tokens: torch.Tensor):
        """Scores (B, B) of every image of a batch against every sentence (``tokens`` (B, T), one per image)."""
        regions = self.regions(images, boxes, valid)
        return alignment_scores(regions, region_mask(valid), self.words(tokens), word_mask(tokens))


def word_mask(tokens: torch.Tensor) -> torch.Tensor:
    """(N, T) bool: the words (not ``<start>``, ``<end>``, ``<pad>``)."""
    return (tokens != PAD_ID) & (tokens != START_ID) & (tokens != END_ID)


def region_mask(valid: torch.Tensor) -> torch.Tensor:
    """(B, M) box validity -> (B, 1 + M), the whole image always present."""
    return torch.cat([torch.ones_like(valid[:, :1]), valid], 1)


def alignment_scores(regions: torch.Tensor, regions_present: torch.Tensor, words: torch.Tensor,
                     words_present: torch.Tensor, chunk: int = 100) -> torch.Tensor:  # fmt: skip
    """S_kl = Σ_t max_i v_iᵀ s_t (eq. 8) for every image k and sentence l.

    Args:
        regions: (K, R, D), regions_present: (K, R) bool.
        words: (L, T, D), words_present: (L, T) bool.
        chunk: images per matrix product (memory: chunk · R · L · T floats).

    Returns:
        (K, L) scores.
    """
    k, r, d = regions.shape
    l_count, t, _ = words.shape
    flat_words = words.reshape(l_count * t, d).T  # (D, L*T)
    out = []
    for start in range(0, k, chunk):
        part, present = regions[start : start + chunk], regions_present[start : start + chunk]
        dots = (part.reshape(-1, d) @ flat_words).view(len(part), r, l_count, t)  # (k, R, L, T)
        dots = dots.masked_fill(~present[:, :, None, None], float("-inf"))
        best = dots.amax(1).masked_fill(~words_present[None], 0.0)  # (k, L, T): each word's best region
        out.append(best.sum(-1))
    return torch.cat(out)


def best_regions(regions: torch.Tensor, regions_present: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
    """For one image's regions (R, D) and one sentence's words (T, D): each word's best region index (T,)."""
    dots = words @ regions.T  # (T, R)
    return dots.masked_fill(~regions_present[None], float("-inf")).argmax(-1)


def ranking_loss(scores: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """The max-margin ranking loss of eq. 9 over a (B, B) score matrix of B corresponding pairs (diagonal),
    divided by B."""
    if scores.ndim != 2 or scores.shape[0] != scores.shape[1]:
        raise ConfigError(f"The ranking loss takes a square (B, B) score matrix, got {tuple(scores.shape)}.")
    true = scores.diagonal()
    off = ~torch.eye(len(scores), dtype=torch.bool, device=scores.device)
    sentences = (scores - true[:, None] + margin).clamp(min=0)[off].sum()  # rank sentences l for image k
    images = (scores - true[None, :] + margin).clamp(min=0)[off].sum()  # rank images k for sentence l
    return (sentences + images) / len(scores)


@dataclass(frozen=True)
class Retrieval:
    """Retrieval both ways: R@K in percent and median rank (1 = first)."""

    images: int
    sentences: int
    image_to_sentence: dict[str, float]
    sentence_to_image: dict[str, float]

    @property
    def chance_r1(self) -> dict[str, float]:
        """R@1 in percent of random rankings: an image's true sentences among all, a sentence's one image."""
        per_image = self.sentences / self.images
        return {"image_to_sentence": 100 * per_image / self.sentences, "sentence_to_image": 100 / self.images}


def retrieval(scores: torch.Tensor, owner: torch.Tensor) -> Retrieval:
    """Retrieval figures from (K, L) scores of K images and L sentences, ``owner[l]`` the image of sentence l.

    Image→sentence ranks, for each image, the position of its best-ranked true sentence (the paper's protocol);
    sentence→image the position of its image. Ties count against the true match (a constant score ranks last).
    """
    k, l_count = scores.shape
    true_mask = owner[None, :] == torch.arange(k, device=scores.device)[:, None]  # (K, L)
    best_true = scores.masked_fill(~true_mask, float("-inf")).amax(1)  # (K,)
    rank_i2s = (scores.masked_fill(true_mask, float("-inf")) >= best_true[:, None]).sum(1) + 1
    true_score = scores[owner, torch.arange(l_count, device=scores.device)]  # (L,)
    rank_s2i = (scores >= true_score[None, :]).sum(0)  # the images at least as good, its own included
    return Retrieval(k, l_count, _recall(rank_i2s), _recall(rank_s2i))


def _recall(ranks: torch.Tensor) -> dict[str, float]:
    ranks = ranks.float()
    out = {f"r{n}": float((ranks <= n).float().mean() * 100) for n in (1, 5, 10)}
    out["median_rank"] = float(ranks.median())
    return out
