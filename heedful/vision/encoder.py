"""The image encoder: a small CNN whose feature-map cells are the attention memory.

As in Show, Attend and Tell (Xu et al. 2015) and im2markup (Deng et al. 2017), a stack of
convolutions turns an image into an H' x W' grid of feature vectors and the decoder attends
over the grid cells exactly as a translator attends over source words::

    (B, 1, H, W) uint8 ──conv3x3·BN·ReLU, pool 2x2──────► (B, C1, H/2,  W/2)
                       ──conv3x3·BN·ReLU, pool 2x2──────► (B, C2, H/4,  W/4)
                       ──(conv3x3·BN·ReLU) x2, pool 2x1─► (B, C3, H/8,  W/4)
                       ──conv3x3·BN·ReLU, pool 2x1──────► (B, C4, H/16, W/4)
                       ──linear C4 -> D, + 2-D position────────────────────► (B, S, D)

with S = H/16 x W/4 memory slots in **column-major order** (slot = column x H' + row): the
valid slots of a right-padded image are then a prefix of the sequence, as padded words are
in a sentence, so the RNN encoder's packing and every mask work unchanged. 2-D position
information (``model.image_position``): ``embeddings`` adds a learned embedding per row and a
sinusoidal encoding of the column (images of any width); ``row_encoder`` runs a bidirectional
GRU along each row of cells, started from a learned state per row, as im2markup's row encoder
does (Deng et al. 2017), so a cell knows its row from the start state and its column from
what the GRU has passed. Padded columns are zeroed after every convolution (and the row
GRU is packed), so an image encodes the same alone and inside a padded batch (in eval mode;
images are padded to a multiple of 4 wide by :mod:`heedful.vision.images`, so pooling cuts
the same columns either way).

Every slot keeps its box in the normalised image (:meth:`ImageEncoder.slot_boxes`), so
attention over slots can be drawn back onto the picture.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from heedful.vision.images import HEIGHT_STRIDE, WIDTH_STRIDE


def _column_positions(columns: int, dim: int, device: torch.device) -> Tensor:
    """Sinusoidal encodings (columns, dim) of column indices 0..columns-1."""
    pos = torch.arange(columns, device=device, dtype=torch.float32).unsqueeze(1)
    div = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32)
                    * (-np.log(10_000.0) / dim))
    table = torch.zeros(columns, dim, device=device)
    table[:, 0::2] = torch.sin(pos * div)
    table[:, 1::2] = torch.cos(pos * div[: dim // 2])
    return table


class _ConvBlock(nn.Module):
    """conv 3x3 -> batch norm -> ReLU, padded columns zeroed afterwards."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(c_out)

    def forward(self, x: Tensor, columns: Tensor) -> Tensor:
        """x (B, C, H, W), columns (B, W) float 0/1 -> (B, C', H, W)."""
        return torch.relu(self.norm(self.conv(x))) * columns[:, None, None, :]


class ImageEncoder(nn.Module):
    """(B, 1, H, W) uint8 images + column mask (B, W) -> memory (B, S, D) and mask (B, S).

    ``height``: the fixed image height H (a multiple of 16); ``out_dim``: D, what the
    decoder side reads (the text model's embedding size); ``channels``: C1..C4."""

    def __init__(self, height: int, out_dim: int, channels: tuple[int, int, int, int],
                 dropout: float, position: str = "embeddings") -> None:
        super().__init__()
        if height % HEIGHT_STRIDE:
            raise ValueError(f"image height {height} is not a multiple of {HEIGHT_STRIDE}")
        c1, c2, c3, c4 = channels
        self.height, self.rows = height, height // HEIGHT_STRIDE
        self.block1, self.block2 = _ConvBlock(1, c1), _ConvBlock(c1, c2)
        self.block3a, self.block3b = _ConvBlock(c2, c3), _ConvBlock(c3, c3)
        self.block4 = _ConvBlock(c3, c4)
        self.project = nn.Linear(c4, out_dim)
        self.position = position
        if position == "embeddings":
            self.row_embed = nn.Embedding(self.rows, out_dim)
        elif position == "row_encoder":
            if out_dim % 2:
                raise ValueError(f"a row encoder needs an even model.embed_dim (got {out_dim})")
            self.row_rnn = nn.GRU(out_dim, out_dim // 2, batch_first=True, bidirectional=True)
            # (directions, rows, D/2): each row's learned start state, both directions
            self.row_start = nn.Parameter(torch.zeros(2, self.rows, out_dim // 2))
        else:
            raise ValueError(f"unknown image position encoding {position!r}")
        self.dropout = nn.Dropout(dropout)
        self.out_dim = out_dim

    def forward(self, images: Tensor, column_mask: Tensor) -> tuple[Tensor, Tensor]:
        """images (B, 1, H, W) uint8 (ink high), column_mask (B, W) bool -> memory (B, S, D),
        slot mask (B, S) bool, S = (H / 16) x (W / 4), column-major."""
        if images.size(2) != self.height:
            raise ValueError(f"images are {images.size(2)} rows high; this model reads "
                             f"{self.height}")
        dtype = self.project.weight.dtype
        cols = column_mask.to(dtype)
        x = images.to(dtype) / 255.0
        x = self.block1(x, cols)
        x, cols = nn.functional.max_pool2d(x, 2), cols[:, ::2]
        x = self.block2(x, cols)
        x, cols = nn.functional.max_pool2d(x, 2), cols[:, ::2]
        x = self.block3b(self.block3a(x, cols), cols)
        x = nn.functional.max_pool2d(x, (2, 1))
        x = nn.functional.max_pool2d(self.block4(x, cols), (2, 1))
        b, _, rows, columns = x.shape
        # (B, C, H', W') -> (B, W', H', C): column-major slots
        feats = self.project(x.permute(0, 3, 2, 1))
        if self.position == "row_encoder":
            feats = self._encode_rows(feats, cols)
        else:
            feats = (feats + self.row_embed.weight[None, None, :rows] + _column_positions(
                columns, self.out_dim, x.device)[None, :, None].to(dtype))
        memory = self.dropout(feats.reshape(b, columns * rows, self.out_dim))
        slot_mask = (cols > 0).repeat_interleave(rows, dim=1)
        return memory, slot_mask

    def _encode_rows(self, feats: Tensor, cols: Tensor) -> Tensor:
        """feats (B, W', H', D), cols (B, W') 0/1 -> (B, W', H', D): a bi-GRU along each of
        the B x H' rows over the image's own columns (packed, so padding changes nothing),
        started from the row's learned state."""
        b, columns, rows, dim = feats.shape
        lengths = cols.sum(1).long().clamp(min=1).repeat_interleave(rows).cpu()
        sequences = feats.permute(0, 2, 1, 3).reshape(b * rows, columns, dim)
        start = self.row_start.repeat(1, b, 1).to(feats.dtype).contiguous()  # (2, B x H', D/2)
        packed = nn.utils.rnn.pack_padded_sequence(sequences, lengths, batch_first=True,
                                                   enforce_sorted=False)
        out, _ = self.row_rnn(packed, start)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=columns)
        return out.reshape(b, rows, columns, dim).permute(0, 2, 1, 3)

    def slot_boxes(self, width: int) -> np.ndarray:
        """The box (x0, y0, x1, y1) in normalised-image pixels of every memory slot of an
        image ``width`` pixels wide (after normalisation): (S, 4) int, in slot order."""
        columns = -(-width // WIDTH_STRIDE)
        col, row = np.divmod(np.arange(columns * self.rows), self.rows)
        return np.stack([col * WIDTH_STRIDE, row * HEIGHT_STRIDE, (col + 1) * WIDTH_STRIDE,
                         (row + 1) * HEIGHT_STRIDE], axis=1)
