"""Token-budget batches: the batch plan and the endless, resumable training stream.

Batches hold at most ``batch_tokens`` tokens counted as OpenNMT-py counts them: sentences x
the longest side (padding included). Pairs are sorted by (target, source) length into batches
once (:class:`BatchPlan`, NumPy over the length arrays); the order of batches is shuffled per
epoch by a generator seeded with ``seed`` and ``epoch``, so the data order is a pure function of
(seed, epoch, position) and resumes exactly.

The token ids come as :class:`TokenArray` s — one flat id array and an offsets array per side —
either memory-mapped from a prepared store (:mod:`heedful.store`) or built from lists in
memory. :class:`BatchStream` pads the pairs of a batch when it is drawn, optionally on a
background thread a few batches ahead (``prefetch``), pinned for a CUDA device.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from heedful.data import Batch


@dataclass(frozen=True)
class TokenArray:
    """N sequences of token ids: sequence i is ``tokens[offsets[i]:offsets[i + 1]]``;
    ``lengths[i]`` is its length. The arrays may be memory-mapped (read-only)."""

    tokens: np.ndarray
    offsets: np.ndarray
    lengths: np.ndarray

    @classmethod
    def from_lists(cls, seqs: Sequence[Sequence[int]]) -> TokenArray:
        lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
        offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        tokens = np.fromiter((t for s in seqs for t in s), dtype=np.int64,
                             count=int(offsets[-1]))
        return cls(tokens, offsets, lengths)

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.tokens[self.offsets[i]:self.offsets[i + 1]]

    def in_memory(self) -> TokenArray:
        """A copy held in memory (for a store whose files are about to go)."""
        return TokenArray(np.array(self.tokens), np.array(self.offsets), np.array(self.lengths))


Collate = Callable[[Sequence[np.ndarray]], tuple[torch.Tensor, torch.Tensor]]
"""Non-text inputs (images, features) -> the padded batch tensor and its (B, L) mask."""


@dataclass(frozen=True)
class SourceArray:
    """N non-text training inputs (normalised images, audio features) for the batch stream:
    ``items[i]`` an array, ``lengths[i]`` its encoder memory slots (what a batch's cost
    counts), and ``collate``, the source's batching function (NumPy only: it runs on the
    batch-assembling thread)."""

    items: list[np.ndarray]
    lengths: np.ndarray
    collate: Collate

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.items[i]


def length_order(src_lens: np.ndarray, tgt_lens: np.ndarray) -> np.ndarray:
    """Example indices sorted by (target length, source length, index)."""
    return np.lexsort((np.asarray(src_lens), np.asarray(tgt_lens)))  # stable: ties by index


def padded_sizes(src_lens: np.ndarray, tgt_lens: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Along ``order``, each example's size in a batch: max(source, target + 1) (int32)."""
    sizes = np.empty(len(order), dtype=np.int32)
    for a in range(0, len(order), 1 << 20):  # in blocks: memory-mapped lengths stay lean
        idx = order[a:a + (1 << 20)]
        sizes[a:a + len(idx)] = np.maximum(src_lens[idx], tgt_lens[idx].astype(np.int32) + 1)
    return sizes


@dataclass(frozen=True)
class BatchPlan:
    """Example indices grouped into batches: batch b is ``order[starts[b]:starts[b + 1]]``."""

    order: np.ndarray
    starts: np.ndarray

    @classmethod
    def build(cls, src_lens: np.ndarray, tgt_lens: np.ndarray, batch_tokens: int,
              order: np.ndarray | None = None, sizes: np.ndarray | None = None) -> BatchPlan:
        """Cut the examples, in ``order`` (default :func:`length_order`), into batches of at
        most ``batch_tokens`` padded tokens: a batch's cost is len(batch) x max(longest
        source, longest target + 1). An example longer than the budget gets a batch of its
        own. The cut is greedy, in order: a batch takes examples while the cost stays within
        the budget. ``sizes``: :func:`padded_sizes` along ``order``, if already known (then
        the lengths are not read at all)."""
        if order is None:
            order = length_order(src_lens, tgt_lens)
        size = padded_sizes(src_lens, tgt_lens, order) if sizes is None else sizes
        starts = [0]
        s, n = 0, len(size)
        counts = np.arange(1, batch_tokens + 2)
        while s < n:
            # a batch of k examples costs at least k * size[s]: k <= batch_tokens // size[s]
            window = size[s:s + min(n - s, batch_tokens // int(size[s]) + 1)]
            cost = np.maximum.accumulate(window) * counts[:len(window)]
            # cost grows strictly along the window: the first k entries within the budget fit
            s += max(int(np.searchsorted(cost, batch_tokens, side="right")), 1)
            starts.append(s)
        return cls(np.asarray(order), np.asarray(starts, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.starts) - 1

    def __getitem__(self, b: int) -> np.ndarray:
        return self.order[self.starts[b]:self.starts[b + 1]]


def plan_batches(src_lens: Sequence[int], tgt_lens: Sequence[int], batch_tokens: int
                 ) -> list[list[int]]:
    """:class:`BatchPlan` as lists of example indices (for corpora held in memory)."""
    plan = BatchPlan.build(np.asarray(src_lens, dtype=np.int64),
                           np.asarray(tgt_lens, dtype=np.int64), batch_tokens)
    return [plan[b].tolist() for b in range(len(plan))]


def epoch_order(num_batches: int, seed: int, epoch: int) -> list[int]:
    """The batch order of one epoch: a pure function of (seed, epoch)."""
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(num_batches, generator=gen).tolist()


def batch_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of the batch at (epoch, index) of a stream seeded ``seed``, for what varies
    per draw (subword sampling): a 32-bit value well mixed from all three."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


# (source rows, target rows, seed) -> new id lists: source rows end with EOS, targets are bare
Resegmenter = Callable[[list[np.ndarray], list[np.ndarray], int],
                       tuple[list[list[int]], list[list[int]]]]
# (a batch's images or features, seed) -> as many of the same shapes, distorted
Augmenter = Callable[[list[np.ndarray], int], list[np.ndarray]]


def _targets(tgt: TokenArray, members: np.ndarray, pad_id: int, bos_id: int, eos_id: int
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """tgt_in (B, T + 1) starting with BOS, tgt_out ending with EOS, tgt_mask, and the
    number of target tokens of the examples ``members``."""
    tgt_len = tgt.lengths[members]
    tgt_in = np.full((len(members), int(tgt_len.max()) + 1), pad_id, dtype=np.int64)
    tgt_out = np.full_like(tgt_in, pad_id)
    tgt_in[:, 0] = bos_id
    for row, i in enumerate(members.tolist()):
        t = tgt[i]
        tgt_in[row, 1:len(t) + 1] = t
        tgt_out[row, :len(t)] = t
        tgt_out[row, len(t)] = eos_id
    # NumPy only: a torch op on the prefetching thread could start a second OpenMP team
    tgt_mask = tgt_out != pad_id
    return (torch.from_numpy(tgt_in), torch.from_numpy(tgt_out), torch.from_numpy(tgt_mask),
            int(tgt_mask.sum()))


def assemble(src: TokenArray | SourceArray, tgt: TokenArray, members: np.ndarray,
             pad_id: int, bos_id: int, eos_id: int, links: TokenArray | None = None,
             items: list[np.ndarray] | None = None) -> Batch:
    """The padded batch of examples ``members``: the same tensors as
    :func:`heedful.data.make_batch` gives for their id lists (and, with ``links``, the
    examples' subword links as ``Batch.align``). Non-text sources (a :class:`SourceArray`)
    give their collated batch and mask (images: (B, 1, H, W) and the column mask); ``items``:
    the members' inputs to collate instead of the stored ones (distorted copies)."""
    num = len(members)
    tgt_in_t, tgt_out_t, tgt_mask_t, num_tokens = _targets(tgt, members, pad_id, bos_id, eos_id)
    if isinstance(src, SourceArray):
        src_t, src_mask_t = src.collate(
            items if items is not None else [src[i] for i in members.tolist()])
        return Batch(src_t, src_mask_t, tgt_in_t, tgt_out_t, tgt_mask_t, num_tokens)
    src_ids = np.full((num, int(src.lengths[members].max())), pad_id, dtype=np.int64)
    for row, i in enumerate(members.tolist()):
        s = src[i]
        src_ids[row, :len(s)] = s
    src_t, src_mask_t = torch.from_numpy(src_ids), torch.from_numpy(src_ids != pad_id)
    align = None
    if links is not None:
        per_row = [links[i].reshape(-1, 2) for i in members.tolist()]
        rows = np.repeat(np.arange(num), [len(p) for p in per_row])
        pairs = np.concatenate(per_row).astype(np.int64) if num else np.zeros((0, 2), np.int64)
        align = torch.from_numpy(np.stack([rows, pairs[:, 1], pairs[:, 0]], axis=1))
    return Batch(src_t, src_mask_t, tgt_in_t, tgt_out_t, tgt_mask_t, num_tokens, align)


class BatchStream:
    """Endless stream of training batches with a resumable position (epoch, index).

    ``src``/``tgt``: :class:`TokenArray` s (or id lists, converted); ``order`` and
    ``sizes``: the examples' length order and their padded sizes along it, if already known
    (a prepared store keeps them). ``after_batch`` is called on the assembling thread after
    each batch (a store's :meth:`~heedful.store.TokenStore.release_pages`). ``prefetch`` > 0
    assembles that many batches ahead on a background thread; the batches, their order and
    :meth:`position` are the same either way. ``pin_memory``: page-locked batches, for a fast
    copy to a CUDA device. ``resegment``: a :class:`~heedful.subword_sampling.SubwordSampler`
    (subword regularization), called with each batch's rows and a seed from (seed, epoch,
    index); ``augment``: an :class:`~heedful.vision.augment.ImageAugmenter`, called with each
    batch's images and that seed. Call :meth:`close` to stop the thread.
    """

    def __init__(
        self,
        src: TokenArray | SourceArray | Sequence[Sequence[int]],
        tgt: TokenArray | Sequence[Sequence[int]],
        batch_tokens: int,
        seed: int,
        pad_id: int,
        bos_id: int,
        eos_id: int,
        order: np.ndarray | None = None,
        sizes: np.ndarray | None = None,
        prefetch: int = 0,
        pin_memory: bool = False,
        after_batch: Callable[[], None] | None = None,
        links: TokenArray | None = None,
        resegment: Resegmenter | None = None,
        augment: Augmenter | None = None,
    ) -> None:
        self.src = (src if isinstance(src, TokenArray | SourceArray)
                    else TokenArray.from_lists(src))
        self.tgt = tgt if isinstance(tgt, TokenArray) else TokenArray.from_lists(tgt)
        self.links = links
        if resegment is not None and links is not None:
            raise ValueError("links are indices into the stored segmentation: they cannot "
                             "follow a resegmented batch")
        if resegment is not None and isinstance(self.src, SourceArray):
            raise ValueError("subword sampling resegments source text; the source is not text")
        if augment is not None and not isinstance(self.src, SourceArray):
            raise ValueError("augmentation distorts images or audio; the source is text")
        self.resegment, self.augment = resegment, augment
        self.plan = BatchPlan.build(self.src.lengths, self.tgt.lengths, batch_tokens, order,
                                    sizes)
        self.seed = seed
        self.ids = (pad_id, bos_id, eos_id)
        self.prefetch, self.pin_memory = prefetch, pin_memory
        self.after_batch = after_batch
        self.epoch = 0
        self.index = 0
        self._orders: dict[int, list[int]] = {}
        self._ahead: _Prefetcher | None = None

    @property
    def completed_epochs(self) -> int:
        """Epochs fully consumed so far (the current one counts once its last batch is out)."""
        return self.epoch + (1 if self.index >= len(self.plan) else 0)

    def position(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}

    def seek(self, epoch: int, index: int) -> None:
        self.close()
        self.epoch, self.index = epoch, index

    def epoch_order(self, epoch: int) -> list[int]:
        if epoch not in self._orders:
            self._orders = {epoch: epoch_order(len(self.plan), self.seed, epoch)}
        return self._orders[epoch]

    def batch_at(self, epoch: int, index: int, order: list[int] | None = None) -> Batch:
        """The batch at a position: a pure function of (seed, epoch, index). ``order``: the
        epoch's batch order, if the caller keeps it."""
        members = self.plan[(order or self.epoch_order(epoch))[index]]
        if self.augment is not None:
            assert isinstance(self.src, SourceArray)
            items = self.augment([self.src[i] for i in members.tolist()],
                                 batch_seed(self.seed, epoch, index))
            batch = assemble(self.src, self.tgt, members, *self.ids, items=items)
        elif self.resegment is None:
            batch = assemble(self.src, self.tgt, members, *self.ids, links=self.links)
        else:
            rows = members.tolist()
            src, tgt = self.resegment([self.src[i] for i in rows], [self.tgt[i] for i in rows],
                                      batch_seed(self.seed, epoch, index))
            batch = assemble(TokenArray.from_lists(src), TokenArray.from_lists(tgt),
                             np.arange(len(rows)), *self.ids)
        if self.after_batch is not None:
            self.after_batch()
        if self.pin_memory:
            batch = Batch(batch.src.pin_memory(), batch.src_mask.pin_memory(),
                          batch.tgt_in.pin_memory(), batch.tgt_out.pin_memory(),
                          batch.tgt_mask.pin_memory(), batch.num_tgt_tokens,
                          None if batch.align is None else batch.align.pin_memory())
        return batch

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        if self.index >= len(self.plan):
            self.epoch, self.index = self.epoch + 1, 0
            if self._ahead is not None:
                self._ahead.provide_order(self.epoch + 1)
        if self.prefetch <= 0:
            batch = self.batch_at(self.epoch, self.index)
        else:
            if self._ahead is None:
                self._ahead = _Prefetcher(self, self.prefetch)
            batch = self._ahead.get((self.epoch, self.index))
        self.index += 1
        return batch

    def close(self) -> None:
        """Stop the prefetching thread (a later draw starts a new one)."""
        if self._ahead is not None:
            self._ahead.stop()
            self._ahead = None


class _Prefetcher:
    """A thread assembling the stream's next batches, from its position on, into a bounded
    queue.

    The thread runs NumPy only. The epochs' batch orders (a torch ``randperm``) are computed
    on the consumer's thread — for the current and the next epoch at the start, then the next
    one each time the consumer enters an epoch — and handed over: ``randperm`` of more than
    32k batches (a 10M-pair corpus) runs an OpenMP loop, and an OpenMP team started on a
    second thread puts more OpenMP threads than cores in the process, upon which libgomp
    stops letting the training thread's own team spin between its many small parallel
    regions: every region then pays a futex wake-up, and the tiny-model training of
    ``benchmarks/data_scale.py`` ran at 0.63x the speed (docs/engineering-log.md).
    """

    def __init__(self, stream: BatchStream, depth: int) -> None:
        self._queue: queue.Queue[tuple[tuple[int, int], Batch | BaseException]] = (
            queue.Queue(maxsize=depth))
        self._stop = threading.Event()
        self._num_batches, self._seed = len(stream.plan), stream.seed
        self._orders: dict[int, list[int]] = {}
        self._order_ready = threading.Condition()
        for epoch in (stream.epoch, stream.epoch + 1):
            self.provide_order(epoch)
        self._thread = threading.Thread(target=self._run, args=(stream, stream.epoch,
                                                                 stream.index),
                                        name="heedful-batches", daemon=True)
        self._thread.start()

    def provide_order(self, epoch: int) -> None:
        """Compute ``epoch``'s batch order for the thread (call on the consumer's thread)."""
        order = epoch_order(self._num_batches, self._seed, epoch)
        with self._order_ready:
            self._orders = {e: o for e, o in self._orders.items() if e >= epoch - 1}
            self._orders[epoch] = order
            self._order_ready.notify_all()

    def _order(self, epoch: int) -> list[int] | None:
        """``epoch``'s order, waiting for the consumer to provide it (only an epoch shorter
        than the queue can get there first); None once stopped."""
        with self._order_ready:
            while epoch not in self._orders:
                if self._stop.is_set():
                    return None
                self._order_ready.wait(timeout=0.1)
            return self._orders[epoch]

    def _run(self, stream: BatchStream, epoch: int, index: int) -> None:
        order = self._order(epoch)
        while order is not None and not self._stop.is_set():
            if index >= len(order):
                epoch, index = epoch + 1, 0
                order = self._order(epoch)
                if order is None:
                    return
            try:
                item: Batch | BaseException = stream.batch_at(epoch, index, order)
            except BaseException as err:  # handed to the consumer, raised there
                item = err
            while not self._stop.is_set():
                try:
                    self._queue.put(((epoch, index), item), timeout=0.1)
                    break
                except queue.Full:
                    continue
            if isinstance(item, BaseException):
                return
            index += 1

    def get(self, expected: tuple[int, int]) -> Batch:
        pos, item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        assert pos == expected, f"prefetched batch {pos}, expected {expected}"
        return item

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
