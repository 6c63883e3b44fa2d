"""Image-to-report retrieval ("similar prior cases") from pooled vision-tower embeddings.

`image_embeddings` pools the tower's output per image and L2-normalises it, so a dot product is
the cosine similarity. `ReportIndex` is a plain numpy index (exact search; thousands of reports
need no approximate index), saved as safetensors (embeddings) + JSON (reports).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

EMBEDDINGS_FILE = "embeddings.safetensors"
REPORTS_FILE = "reports.json"


def _tower(bundle_or_tower: Any) -> Any:
    llava = getattr(bundle_or_tower, "llava", None)
    if llava is not None:  # a MedVLM bundle
        return llava.model.vision_tower
    return bundle_or_tower


def image_embeddings(bundle_or_tower: Any, pixel_values: torch.Tensor) -> torch.Tensor:
    """Pooled, L2-normalised vision embeddings.

    Pooling is the tower's own pooler output when it has one (ViT/CLIP/DINOv2: the CLS token,
    SigLIP: its attention-pooling head), else the mean over patch tokens.

    Args:
        bundle_or_tower: a `MedVLM` or a Hugging Face vision model.
        pixel_values: (B, 3, S, S) from the processor.

    Returns:
        (B, D) float32 unit vectors (gradients flow, so contrastive training can use it).
    """
    import torch

    tower = _tower(bundle_or_tower)
    dtype = next(tower.parameters()).dtype
    out = tower(pixel_values=pixel_values.to(dtype), return_dict=True)
    pooled = getattr(out, "pooler_output", None)
    if pooled is None or pooled.dim() != 2:
        pooled = out.last_hidden_state.mean(dim=1)  # (B, D)
    return torch.nn.functional.normalize(pooled.float(), dim=-1)  # (B, D)


@dataclass(frozen=True)
class SearchHit:
    """One retrieved report."""

    index: int
    """Position in the index."""
    score: float
    """Cosine similarity in [-1, 1]."""
    report: str
    """The report text."""


class ReportIndex:
    """Exact cosine-similarity index of report texts keyed by image embeddings.

    Args:
        dim: embedding size D.
    """

    def __init__(self, dim: int) -> None:
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.dim = dim
        self._embeddings = np.zeros((0, dim), dtype=np.float32)  # (N, D), unit rows
        self._reports: list[str] = []

    def __len__(self) -> int:
        return len(self._reports)

    @staticmethod
    def _normalise(x: np.ndarray) -> np.ndarray:
        norm = np.linalg.norm(x, axis=-1, keepdims=True)
        return (x / np.maximum(norm, 1e-12)).astype(np.float32)

    def add(self, embeddings: Any, reports: Sequence[str]) -> None:
        """Add (N, D) embeddings (numpy or torch; re-normalised) with their N reports.

        Raises:
            ValueError: shapes disagree with each other or with `dim`.
        """
        emb = np.asarray(
            embeddings.detach().cpu() if hasattr(embeddings, "detach") else embeddings, dtype=np.float32
        )
        if emb.ndim != 2 or emb.shape[1] != self.dim:
            raise ValueError(f"embeddings must be (N, {self.dim}), got {emb.shape}")
        if emb.shape[0] != len(reports):
            raise ValueError(f"{emb.shape[0]} embeddings but {len(reports)} reports")
        self._embeddings = np.concatenate([self._embeddings, self._normalise(emb)])
        self._reports.extend(str(r) for r in reports)

    def search(self, query: Any, k: int = 5) -> list[list[SearchHit]]:
        """The k most similar reports for each query embedding.

        Args:
            query: (D,) or (Q, D) embeddings.
            k: hits per query (fewer when the index is smaller).

        Returns:
            Q lists of hits, best first.
        """
        q = np.asarray(query.detach().cpu() if hasattr(query, "detach") else query, dtype=np.float32)
        q = q[None] if q.ndim == 1 else q  # (Q, D)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"query must be (D,) or (Q, D) with D={self.dim}, got {q.shape}")
        if len(self) == 0 or k < 1:
            return [[] for _ in range(q.shape[0])]
        sims = self._normalise(q) @ self._embeddings.T  # (Q, N)
        k = min(k, len(self))
        results = []
        for row in sims:
            top = np.argpartition(-row, k - 1)[:k]
            top = top[np.argsort(-row[top], kind="stable")]
            results.append([SearchHit(int(i), float(row[i]), self._reports[i]) for i in top])
        return results

    def save(self, directory: str | Path) -> None:
        """Write `embeddings.safetensors` and `reports.json` into `directory`."""
        from safetensors.numpy import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({"embeddings": self._embeddings}, str(directory / EMBEDDINGS_FILE))
        (directory / REPORTS_FILE).write_text(
            json.dumps({"dim": self.dim, "reports": self._reports}, ensure_ascii=False), encoding="utf-8"
        )

    @classmethod
    def load(cls, directory: str | Path) -> ReportIndex:
        """Read an index written by `save`.

        Raises:
            ValueError: the two files disagree.
        """
        from safetensors.numpy import load_file

        directory = Path(directory)
        meta = json.loads((directory / REPORTS_FILE).read_text(encoding="utf-8"))
        emb = load_file(str(directory / EMBEDDINGS_FILE))["embeddings"]
        index = cls(int(meta["dim"]))
        index.add(emb, meta["reports"])
        return index
