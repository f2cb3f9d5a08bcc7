"""The generation model: a zoo CNN whose top layer feeds an LSTM that emits the description (Vinyals et al. 2015,
"Show and tell"; Karpathy & Fei-Fei 2015, section 3.2), with teacher forcing, greedy and beam search.

The image goes in *once, first*: x₋₁ = W·CNN(I), then x₀ = E·<start>, x₁ = E·w₁, … (Vinyals et al., eq. 10–12:
feeding the image at every step "yields inferior results", the network can "more easily overfit noise").
The CNN is any zoo model through the model contract: its ``forward_head(forward_features(x), pre_logits=True)``
vector (a ResNet's global-average pool, a fully connected model's flattened last stage: where objects are
survives the latter), trained with the decoder or frozen.

Decoding: greedy (the most probable word at every step), or beam search keeping the ``beam`` most probable
partial captions per image by their summed log-probability; when every beam has ended, the caption with the best
length-normalised score log P / length^α is chosen (α = 1: mean log-probability per word; without it beam
search prefers short captions). Beam 1 is greedy (tested).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.data.captions import END_ID, PAD_ID, START_ID
from cnnlab.errors import ConfigError

MAX_WORDS = 30  # a generated caption's longest (words, <end> excluded)


def encoder_features(encoder: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The model contract's pooled vector: (B, C, H, W) -> (B, num_features)."""
    return encoder.forward_head(encoder.forward_features(images), pre_logits=True).flatten(1)


def feature_width(encoder: nn.Module, input_shape: tuple[int, int, int]) -> int:
    """Width of :func:`encoder_features` for (C, H, W) inputs (one probe forward pass, eval mode)."""
    was_training = encoder.training
    encoder.eval()
    with torch.no_grad():
        device = next(encoder.parameters()).device
        width = encoder_features(encoder, torch.zeros(1, *input_shape, device=device)).shape[1]
    encoder.train(was_training)
    return int(width)


def reference_nll(logits: torch.Tensor, references: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean NLL per word, summed NLL, word count) of :meth:`CaptionModel.forward`'s logits (N, T − 1, V) for
    ``references`` (B, R, T); ``<end>`` counts as a word, padding does not."""
    targets = references[references[:, :, 0] == START_ID][:, 1:]  # (N, T-1)
    summed = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=PAD_ID,
                             reduction="sum")  # fmt: skip
    count = (targets != PAD_ID).sum()
    return summed / count.clamp(min=1), summed, count


class CaptionModel(nn.Module):
    """CNN encoder + LSTM decoder.

    Args:
        encoder: a zoo model (the model contract).
        input_shape: (C, H, W) of the images it gets.
        vocab_size: tokens of the vocabulary (specials included).
        embed_dim: width of word embeddings and of the projected image (the LSTM's input).
        hidden_dim: the LSTM's state.
        dropout: on the LSTM's outputs in training (Vinyals et al. use dropout against overfitting).
        freeze_encoder: keep the CNN's weights (and its batch-norm statistics) as given.
    """

    def __init__(
        self,
        encoder: nn.Module,
        input_shape: tuple[int, int, int],
        vocab_size: int,
        embed_dim: int = 128,
        hidden_dim: int = 256,
        dropout: float = 0.0,
        freeze_encoder: bool = False,
    ):
        super().__init__()
        if vocab_size < 5:
            raise ConfigError(f"A vocabulary needs the 4 special tokens and at least one word, got {vocab_size}.")
        self.encoder = encoder
        self.input_shape = tuple(input_shape)
        self.vocab_size, self.embed_dim, self.hidden_dim = vocab_size, embed_dim, hidden_dim
        self.freeze_encoder = freeze_encoder
        # CNN(I) -> x₋₁. Layer norm: a randomly initialised CNN's pooled vector is small (≈ 0.05 per unit for
        # dmnist-cnn), so the projected image starts far below the unit-variance word embeddings and the LSTM learns
        # to ignore it (measured: 10 scenes do not overfit without it); normalised, it starts on their scale.
        self.image_projection = nn.Sequential(
            nn.Linear(feature_width(encoder, self.input_shape), embed_dim), nn.LayerNorm(embed_dim)
        )
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD_ID)
        self.lstm = nn.LSTM(embed_dim, hidden_dim, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(hidden_dim, vocab_size)
        if freeze_encoder:
            encoder.requires_grad_(False)

    def train(self, mode: bool = True) -> CaptionModel:
        super().train(mode)
        if self.freeze_encoder:  # a frozen CNN keeps its batch-norm statistics and has no dropout
            self.encoder.eval()
        return self

    def image_inputs(self, images: torch.Tensor) -> torch.Tensor:
        """x₋₁ of each image: (B, C, H, W) -> (B, embed_dim)."""
        if tuple(images.shape[1:]) != self.input_shape:
            raise ConfigError(
                f"This captioner takes images of shape {self.input_shape} (C, H, W), got {tuple(images.shape[1:])}."
            )
        return self.image_projection(encoder_features(self.encoder, images))

    def teacher_forced_logits(self, image_inputs: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Logits of each next word given the true previous ones.

        Args:
            image_inputs: (N, E) x₋₁ of each caption's image.
            tokens: (N, T) ``<start> w1 … wn <end> <pad>…``.

        Returns:
            (N, T − 1, V): the prediction of ``tokens[:, 1:]``.
        """
        words = self.embedding(tokens[:, :-1])  # (N, T-1, E): <start>, w1, ..., the last word before <end>
        outputs, _ = self.lstm(torch.cat([image_inputs[:, None], words], 1))  # (N, T, H)
        return self.output(self.dropout(outputs[:, 1:]))  # the output after the image predicts nothing

    def forward(self, images: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits of every present reference, each image encoded once.

        Args:
            images: (B, C, H, W).
            references: (B, R, T) int64 (or (B, T): one each); a reference that is all ``<pad>`` (missing) is
                left out.

        Returns:
            (N, T − 1, V) for the N present references in (image, reference) order: the prediction of
            ``references[present][:, 1:]``.
        """
        if references.ndim == 2:
            references = references[:, None]
        b, r, _ = references.shape
        inputs = self.image_inputs(images)  # (B, E)
        present = references[:, :, 0] == START_ID  # (B, R)
        return self.teacher_forced_logits(inputs[:, None].expand(b, r, -1)[present], references[present])

    def loss(self, images: torch.Tensor, references: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Teacher-forced cross-entropy of every reference of every image (B, R, T).

        Returns:
            (mean NLL per word, summed NLL, word count); ``<end>`` counts as a word, padding does not.
        """
        references = references[:, None] if references.ndim == 2 else references
        return reference_nll(self(images, references), references)

    # ---- decoding --------------------------------------------------------------------------------------------
    def _first_step(self, images: torch.Tensor):
        """Log-probabilities of the first word (B, V) and the LSTM state after x₋₁ and <start>."""
        inputs = self.image_inputs(images)[:, None]  # (B, 1, E)
        start = self.embedding(torch.full((len(images), 1), START_ID, device=images.device))
        outputs, state = self.lstm(torch.cat([inputs, start], 1))
        return F.log_softmax(self.output(outputs[:, -1]).float(), -1), state

    def _step(self, tokens: torch.Tensor, state):
        """(N,) previous words -> log-probabilities (N, V) of the next one, and the new state."""
        outputs, state = self.lstm(self.embedding(tokens)[:, None], state)
        return F.log_softmax(self.output(outputs[:, 0]).float(), -1), state

    @torch.no_grad()
    def greedy(self, images: torch.Tensor, max_words: int = MAX_WORDS) -> torch.Tensor:
        """Greedy captions: int64 (B, ≤ max_words + 1) word ids ending in ``<end>`` then ``<pad>``."""
        log_probs, state = self._first_step(images)
        done = torch.zeros(len(images), dtype=torch.bool, device=images.device)
        out = []
        for _ in range(max_words + 1):
            word = log_probs.argmax(-1).masked_fill(done, PAD_ID)  # (B,)
            out.append(word)
            done = done | (word == END_ID)
            if bool(done.all()):  # syncs: once per step, the loop needs it to stop early
                break
            log_probs, state = self._step(word, state)
        return torch.stack(out, 1)

    @torch.no_grad()
    def beam_search(self, images: torch.Tensor, beam: int = 3, max_words: int = MAX_WORDS,
                    alpha: float = 1.0) -> torch.Tensor:  # fmt: skip
        """Beam-search captions, chosen by log P / length^α: int64 (B, ≤ max_words + 1), as :meth:`greedy`.

        Args:
            beam: partial captions kept per image (1: greedy).
            alpha: length normalisation exponent (0: none, the summed log-probability).
        """
        if not isinstance(beam, int) or beam < 1:
            raise ConfigError(f"The beam width must be a whole number ≥ 1, got {beam!r}.")
        b, v = len(images), self.vocab_size
        k = min(beam, v)
        log_probs, (h, c) = self._first_step(images)  # (B, V)
        score, word = log_probs.topk(k, -1)  # (B, k)
        state = (h.repeat_interleave(k, 1), c.repeat_interleave(k, 1))  # (1, B*k, H)
        history = word[:, :, None]  # (B, k, 1)
        length = torch.ones(b, k, device=images.device)
        done = word == END_ID
        ended_row = torch.full((v,), float("-inf"), device=images.device)
        ended_row[PAD_ID] = 0.0  # an ended caption continues with <pad> at no cost
        for _ in range(max_words):
            if bool(done.all()):  # syncs once per step (stop early)
                break
            log_probs, state = self._step(history[:, :, -1].reshape(-1), state)  # (B*k, V)
            log_probs = torch.where(done.reshape(-1, 1), ended_row, log_probs).view(b, k, v)
            total = (score[:, :, None] + log_probs).view(b, k * v)  # (B, k*V)
            score, flat = total.topk(k, -1)  # (B, k)
            parent, word = flat // v, flat % v
            history = torch.cat([history.gather(1, parent[:, :, None].expand_as(history)), word[:, :, None]], 2)
            length = length.gather(1, parent) + (~done.gather(1, parent)).float()
            done = done.gather(1, parent) | (word == END_ID)
            rows = (parent + torch.arange(b, device=images.device)[:, None] * k).reshape(-1)
            state = (state[0][:, rows], state[1][:, rows])
        best = (score / length.pow(alpha)).argmax(1)  # (B,)
        chosen = history[torch.arange(b, device=images.device), best]  # (B, L)
        ended = (chosen == END_ID).cumsum(1) - (chosen == END_ID).long()  # > 0 after the first <end>
        return chosen.masked_fill(ended > 0, PAD_ID)

    def caption(self, images: torch.Tensor, beam: int = 1, max_words: int = MAX_WORDS, alpha: float = 1.0):
        """Word ids (B, L) by greedy decoding (``beam`` 1) or beam search."""
        if beam == 1:
            return self.greedy(images, max_words)
        return self.beam_search(images, beam, max_words, alpha)
