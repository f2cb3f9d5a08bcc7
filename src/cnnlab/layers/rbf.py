"""LeNet-5's Euclidean radial-basis-function output layer and its class codes."""

from __future__ import annotations

import torch
from torch import nn

# Stand-in for the paper's class codes. LeCun et al. (1998, Fig. 3) use "stylized images of the corresponding
# character class drawn on a 7×12 bitmap" with entries ±1, but the original bitmaps were never published as
# data. These ten glyphs are our own 7-wide × 12-tall drawings of the digits 0–9 in the same spirit: '#' is +1,
# '.' is −1, read row by row into an 84-vector (the size of F6).
DIGIT_GLYPHS_7X12: tuple[str, ...] = (
    "..###.. .#...#. #.....# #.....# #....## #...#.# #.#...# ##....# #.....# #.....# .#...#. ..###..",
    "...#... ..##... .#.#... ...#... ...#... ...#... ...#... ...#... ...#... ...#... ...#... .#####.",
    "..###.. .#...#. #.....# ......# .....#. ....#.. ...#... ..#.... .#..... #...... #...... #######",
    ".#####. #.....# ......# ......# .....#. ..###.. .....#. ......# ......# ......# #.....# .#####.",
    "....##. ...#.#. ..#..#. .#...#. #....#. #....#. ####### .....#. .....#. .....#. .....#. .....#.",
    "####### #...... #...... #...... ######. ......# ......# ......# ......# ......# #.....# .#####.",
    "..####. .#..... #...... #...... #.###.. ##...#. #.....# #.....# #.....# #.....# .#...#. ..###..",
    "####### ......# .....#. .....#. ....#.. ....#.. ...#... ...#... ..#.... ..#.... ..#.... ..#....",
    "..###.. .#...#. #.....# #.....# .#...#. ..###.. .#...#. #.....# #.....# #.....# .#...#. ..###..",
    "..###.. .#...#. #.....# #.....# #.....# .#...## ..###.# ......# ......# .....#. ....#.. .###...",
)

CODE_SEED = 1998  # fixes the extra codes for more than ten classes


def glyph_codes(num_classes: int) -> torch.Tensor:
    """±1 class codes of length 84 (7×12), shape (num_classes, 84).

    The first ten are the digit glyphs above. Beyond ten classes (the paper used 96 ASCII characters, whose
    bitmaps we do not have) the extra codes are random ±1 vectors from a fixed seed, so they are the same on
    every machine and version.
    """
    rows = []
    for glyph in DIGIT_GLYPHS_7X12[:num_classes]:
        bits = glyph.replace(" ", "")
        assert len(bits) == 84, "each glyph is 12 rows of 7"
        rows.append([1.0 if c == "#" else -1.0 for c in bits])
    codes = torch.tensor(rows, dtype=torch.float32).reshape(-1, 84)
    extra = num_classes - codes.shape[0]
    if extra > 0:
        generator = torch.Generator().manual_seed(CODE_SEED)
        random_bits = torch.randint(0, 2, (extra, 84), generator=generator).float() * 2 - 1
        codes = torch.cat([codes, random_bits])
    return codes


class EuclideanRBF(nn.Module):
    """Output y_i = Σ_j (x_j − w_ij)², the squared distance from the input to each class code w_i.

    The codes are fixed (``requires_grad=False``), as in the paper: they count as fixed, not trainable,
    parameters. Lower output means more likely; use ``-y`` as logits. Cross-entropy on ``-y`` is the paper's
    discriminative criterion (eq. 9) without its constant "rubbish class" term e^{−j}.

    Computed as ‖x‖² − 2·x·wᵀ + ‖w‖² so it is one matrix product (fast, and visible to FLOP counters). Float
    rounding can leave an output a hair below 0 when x ≈ w_i; it is not clamped, since a clamp at 0 reads as a ReLU
    to the inspection tools and changes nothing that matters for −y as logits.

    Shape: (B, in_features) -> (B, num_classes).
    """

    def __init__(self, codes: torch.Tensor):
        super().__init__()
        self.codes = nn.Parameter(codes.clone(), requires_grad=False)  # (num_classes, in_features)

    @property
    def num_classes(self) -> int:
        return self.codes.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        codes = self.codes.to(x.dtype)
        return x.pow(2).sum(1, keepdim=True) - 2 * x @ codes.t() + codes.pow(2).sum(1)  # (B, num_classes)

    def extra_repr(self) -> str:
        return f"in_features={self.codes.shape[1]}, num_classes={self.num_classes}"
