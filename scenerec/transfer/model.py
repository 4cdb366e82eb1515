"""The transfer model: a small sequential user encoder over frozen sentence-transformer item vectors.

Item side: frozen vector -> fixed whitening -> trainable adaptor (MLP) [+ optional learned per-item
offset, gated by the item's training frequency], and a learned per-item bias (a popularity prior). User side: the same item representations
plus scene and position embeddings -> pre-LN causal transformer -> for a target scene s:

* a dense user vector u_s (the state after the last item, conditioned on s) matched against the item
  representations: the learned, content-based transfer;
* per history item j, two non-negative weights: how much j's co-occurrence neighbours (from the
  training users, `memory.py`) and j's text neighbours count for scene s.

    score(i) = u_s . e_i + bias_i + sum_j a_j C(j, i) + sum_j w_j exp(tau (cos(x_j, x_i) - 1))

The weights depend on the item, its scene, the context before it, its distance from the end of the
history and the target scene, so the model learns e.g. that in the cold setting an other-scene
item's co-occurrences say little while its text says more.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import sparse
from torch import nn
from torch.nn import functional as F

from ..settings import TransferSettings
from .data import FIRST_ITEM, PAD, ItemTable
from .memory import CooccurrenceMemory, TextNeighbours, TransitionMemory


def whitening(vectors: np.ndarray, eps: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """Mean and ZCA projection that decorrelate the frozen item vectors (rows of `vectors`)."""
    x = vectors.astype(np.float64)
    mean = x.mean(axis=0)
    cov = np.cov(x - mean, rowvar=False)
    eigval, eigvec = np.linalg.eigh(cov)
    scale = 1.0 / np.sqrt(np.clip(eigval, 0, None) + eps * eigval.max())
    return mean.astype(np.float32), ((eigvec * scale) @ eigvec.T).astype(np.float32)


class TransferModel(nn.Module):
    """User encoder, item tower and memory weights. Item data (vectors, scenes) is attached, not saved;
    the co-occurrence memory is saved with the checkpoint."""

    def __init__(
        self, settings: TransferSettings, dim: int, scenes: list[str], vocabulary: list[str]
    ) -> None:
        super().__init__()
        self.settings = settings
        self.dim = dim
        self.scenes = list(scenes)
        self.vocabulary = list(vocabulary)  # rows 1..V of the per-item tables and the memory
        d, n_scenes, length = settings.hidden, len(scenes), settings.max_history
        self.register_buffer("white_mean", torch.zeros(dim))
        self.register_buffer("white_proj", torch.eye(dim))
        self.adaptor = nn.Sequential(
            nn.Linear(dim, d), nn.GELU(), nn.Dropout(settings.dropout), nn.Linear(d, d)
        )
        self.adaptor_skip = nn.Linear(dim, d, bias=False)
        self.item_offset = (
            nn.Embedding(len(vocabulary) + 1, d, sparse=True) if settings.item_offsets else None
        )
        if self.item_offset is not None:
            nn.init.zeros_(self.item_offset.weight)
        # how much an item's learned identity counts: n / (n + shrink) for n training users, so a
        # frequent item leans on its identity and a rare or new one (gate 0) on its text alone
        self.register_buffer("identity_gate", torch.zeros(len(vocabulary) + 1))
        self.item_bias = nn.Embedding(len(vocabulary) + 1, 1, sparse=True)
        nn.init.zeros_(self.item_bias.weight)
        self.scene_in = nn.Embedding(n_scenes + 1, d)  # + the "no scene" id of padding and start
        self.position = nn.Embedding(length + 1, d)
        layer = nn.TransformerEncoderLayer(
            d, settings.heads, 4 * d, settings.dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, settings.layers, enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(d)
        self.input_dropout = nn.Dropout(settings.dropout)
        self.target_scene = nn.Embedding(n_scenes, d)
        self.user_head = nn.Linear(d, d)
        nn.init.zeros_(self.user_head.weight)  # start from the priors and memories alone
        nn.init.zeros_(self.user_head.bias)
        # memory weights: per history item and target scene, plus a learned recency curve per channel
        self.weight_head = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, 2))
        self.recency = nn.Parameter(torch.zeros(2, length + 1))
        self.log_tau = nn.Parameter(torch.tensor(math.log(settings.text_sharpness)))
        self.cooc = CooccurrenceMemory(
            sparse.csr_matrix((len(vocabulary) + 1,) * 2), np.zeros(len(vocabulary) + 1)
        )
        self.text: TextNeighbours | None = None
        self.transitions = TransitionMemory.empty(len(vocabulary) + 1)  # set by rebuild_memories
        # attached item data (non-persistent): token -> whitened vector, raw vector, scene, vocabulary row
        self.register_buffer("whitened", torch.zeros(0, dim), persistent=False)
        self.register_buffer("raw", torch.zeros(0, dim), persistent=False)
        self.register_buffer("scene_of", torch.zeros(0, dtype=torch.long), persistent=False)
        self.register_buffer("vocab_row", torch.zeros(0, dtype=torch.long), persistent=False)
        self.scene_tokens: dict[str, torch.Tensor] = {}

    def set_whitening(self, vectors: np.ndarray) -> None:
        mean, proj = whitening(vectors)
        self.white_mean.copy_(torch.from_numpy(mean))
        self.white_proj.copy_(torch.from_numpy(proj))

    def attach(self, table: ItemTable) -> None:
        """Point the model at a catalog's items; items outside its vocabulary get no per-item rows."""
        if table.dim != self.dim:
            raise ValueError(f"item vectors have dimension {table.dim}, the model expects {self.dim}")
        device = self.white_mean.device
        known = {scene: i for i, scene in enumerate(self.scenes)}
        remap = np.array([known.get(s, len(self.scenes)) for s in table.scenes] + [len(self.scenes)])
        vocab = {item_id: row + 1 for row, item_id in enumerate(self.vocabulary)}
        vocab_row = np.zeros(len(table.vectors), dtype=np.int64)
        for i, item_id in enumerate(table.item_ids):
            vocab_row[i + FIRST_ITEM] = vocab.get(item_id, 0)
        self.raw = torch.from_numpy(table.vectors).to(device)
        with torch.no_grad():  # the frozen part of the item side, computed once
            self.whitened = (self.raw - self.white_mean) @ self.white_proj
        self.scene_of = torch.from_numpy(remap[table.scene_of]).to(device)
        self.vocab_row = torch.from_numpy(vocab_row).to(device)
        self.scene_tokens = {s: torch.from_numpy(t).to(device) for s, t in table.scene_tokens.items()}

    # --- item side ---

    def item_repr(self, tokens: torch.Tensor) -> torch.Tensor:
        """Representations of token ids (any shape) -> (..., hidden)."""
        x = self.whitened[tokens]
        out = self.adaptor(x) + self.adaptor_skip(x)
        if self.item_offset is not None:
            rows = self.vocab_row[tokens]
            out = out + self.identity_gate[rows].unsqueeze(-1) * self.item_offset(rows)
        return out

    def set_identity_gate(self, occurrences: np.ndarray) -> None:
        """Gate of each vocabulary row's identity offset from its training-user count."""
        n = torch.as_tensor(np.asarray(occurrences, dtype=np.float32), device=self.identity_gate.device)
        shrink = self.settings.identity_shrink
        self.identity_gate.copy_(n / (n + shrink) if shrink > 0 else (n > 0).float())
        self.identity_gate[0] = 0

    def bias(self, tokens: torch.Tensor) -> torch.Tensor:
        """Per-item score bias (the learned popularity prior), shape of `tokens`."""
        return self.item_bias(self.vocab_row[tokens]).squeeze(-1)

    def sparse_parameters(self) -> list[nn.Parameter]:
        """The per-item tables: each row is updated only when its item is in a batch."""
        return [t.weight for t in (self.item_offset, self.item_bias) if t is not None]

    def text_kernel(self, cosine: torch.Tensor) -> torch.Tensor:
        """Sharpened text similarity: near-duplicates count, loosely related items hardly."""
        return torch.exp(self.log_tau.exp() * (cosine - 1))

    # --- user side ---

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L) token ids, START first, right-padded -> (B, L, hidden) causal states."""
        length = tokens.shape[1]
        positions = torch.arange(length, device=tokens.device)
        x = self.item_repr(tokens) + self.scene_in(self.scene_of[tokens]) + self.position(positions)[None]
        x = self.input_dropout(x) * (tokens != PAD).unsqueeze(-1)
        causal = torch.triu(torch.ones(length, length, dtype=torch.bool, device=tokens.device), 1)
        return self.final_norm(self.encoder(x, mask=causal))

    def user_from_states(self, states: torch.Tensor, target_scene: torch.Tensor) -> torch.Tensor:
        """(N, hidden) states and target-scene ids -> (N, hidden) dense user vectors."""
        return self.user_head(states + self.target_scene(target_scene))

    def item_weights(self, states: torch.Tensor, tokens: torch.Tensor, scene: int) -> torch.Tensor:
        """(2, B, L, L) non-negative memory weights [channel, b, t, j]: how much history item j counts
        for the user state after t items, for target `scene`; zero unless 1 <= j <= t."""
        length = tokens.shape[1]
        base = self.weight_head(states + self.target_scene.weight[scene])  # (B, L, 2), j's own view
        t = torch.arange(length, device=tokens.device)
        distance = (t[:, None] - t[None, :]).clamp(0, self.settings.max_history)  # [t, j] = t - j
        logits = base[:, None, :, :] + self.recency[:, distance].permute(1, 2, 0)[None]
        visible = (t[None, :] <= t[:, None]) & (t[None, :] >= 1)  # j in 1..t (0 is the start token)
        visible = visible[None] & (tokens != PAD)[:, None, :]
        weights = F.softplus(logits) * visible[..., None]
        return weights.permute(3, 0, 1, 2).contiguous()  # contiguous: strided batched matmuls are slow
