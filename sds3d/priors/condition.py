"""The text condition of a prior: what ``Prior.encode_prompts`` returns and ``Prior.predict`` takes.

Text-to-image denoisers take more than one tensor from their text encoders: Stable Diffusion
1.x/2.x per-token embeddings only; SDXL also a pooled embedding and its micro-conditioning
("time ids": original size, crop, target size); SD3 per-token and pooled embeddings of three
encoders (CLIP-L, CLIP-G, T5); Flux T5 tokens and a CLIP pooled embedding. A ``Condition`` holds
them as one batch whose rows can be indexed, repeated and concatenated like a tensor's, so
guidance code builds the rows of one batched prior call (conditional, unconditional, negatives)
without knowing which parts a prior uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor


@dataclass
class Condition:
    """A batch of B text conditions.

    Attributes:
        tokens: per-token embeddings. Shape: (B, S, D).
        pooled: one pooled embedding per row, or None for priors whose denoiser takes none
            (Stable Diffusion 1.x/2.x, the toy prior). Shape: (B, P).
        extras: further per-row conditioning by name (SDXL's ``"time_ids"``, (B, 6); a
            guidance-distilled prior's ``"guidance"`` scale, (B,)); every entry has the batch
            dimension first.
    """

    tokens: Tensor
    pooled: Tensor | None = None
    extras: dict[str, Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def map(self, fn: Callable[[Tensor], Tensor]) -> Condition:
        """``fn`` applied to every part (tokens, pooled, each extra): a new condition."""
        return Condition(fn(self.tokens), None if self.pooled is None else fn(self.pooled), {k: fn(v) for k, v in self.extras.items()})

    def __getitem__(self, index) -> Condition:
        """Rows by int, slice, index tensor or list; the batch dimension is kept (an int gives one row)."""
        if isinstance(index, int):
            index = [index]
        return self.map(lambda x: x[index])

    @staticmethod
    def cat(conditions: list[Condition]) -> Condition:
        """Rows of all ``conditions`` in order (like ``torch.cat`` on dim 0); they must have the same parts."""
        if not conditions:
            raise ValueError("Condition.cat needs at least one condition")
        first = conditions[0]
        for c in conditions[1:]:
            if (c.pooled is None) != (first.pooled is None) or c.extras.keys() != first.extras.keys():
                raise ValueError("Condition.cat: conditions with different parts (pooled / extras) cannot be concatenated")
        pooled = None if first.pooled is None else torch.cat([c.pooled for c in conditions])
        extras = {k: torch.cat([c.extras[k] for c in conditions]) for k in first.extras}
        return Condition(torch.cat([c.tokens for c in conditions]), pooled, extras)

    def repeat(self, n: int) -> Condition:
        """The whole batch n times, sample-major (``Tensor.repeat(n, ...)`` on dim 0): rows 0..B-1, 0..B-1, ..."""
        return self.map(lambda x: x.repeat(n, *([1] * (x.ndim - 1))))

    def repeat_interleave(self, n: int) -> Condition:
        """Each row n times in place: rows 0, 0, ..., 1, 1, ... (``Tensor.repeat_interleave(n, dim=0)``)."""
        return self.map(lambda x: x.repeat_interleave(n, dim=0))

    def expand(self, batch: int) -> Condition:
        """B rows from one (a view, no copy; ``Tensor.expand``)."""
        if len(self) != 1:
            raise ValueError(f"Condition.expand needs a single row; this condition has {len(self)} (index one first)")
        return self.map(lambda x: x.expand(batch, *x.shape[1:]))

    def with_extras(self, **extras: Tensor) -> Condition:
        """The same rows with ``extras`` added or replaced (each with this condition's B rows first)."""
        for name, value in extras.items():
            if value.shape[0] != len(self):
                raise ValueError(f"Condition.with_extras: {name!r} has {value.shape[0]} rows, the condition {len(self)}")
        return Condition(self.tokens, self.pooled, {**self.extras, **extras})

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Condition:
        """On ``device``; floating-point parts cast to ``dtype`` (integer extras keep theirs)."""
        def move(x: Tensor) -> Tensor:
            return x.to(device=device, dtype=dtype if dtype is not None and x.is_floating_point() else None)

        return self.map(move)
