"""Batch scoring's output: `BatchScores` (top-k per user) and its parquet/CSV files (one file or a folder of parts)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ScenerecError

FORMATS = (".parquet", ".csv")
# score: the readable score `recommend` shows (percentile within the scene, recommend/scores.py);
# raw_score: the ranking model's own (fused RRF, or the LLM stage's fused score with --rerank)
COLUMNS = ("user_id", "rank", "item_id", "score", "raw_score")


@dataclass
class BatchScores:
    """Top-k per user: `item_ids[u]`, `scores[u]` (readable) and `raw_scores[u]` best first (shorter
    than k when a scene runs out)."""

    scene: str
    k: int
    user_ids: list[str] = field(default_factory=list)
    item_ids: list[list[str]] = field(default_factory=list)
    scores: list[list[float]] = field(default_factory=list)
    raw_scores: list[list[float]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.user_ids)

    def extend(self, other: BatchScores) -> None:
        self.user_ids += other.user_ids
        self.item_ids += other.item_ids
        self.scores += other.scores
        self.raw_scores += other.raw_scores

    def columns(self) -> dict[str, list]:
        """Long format: one row per (user, rank), rank 1-based."""
        users, ranks, items, scores, raw = [], [], [], [], []
        for user_id, ids, values, raws in zip(self.user_ids, self.item_ids, self.scores, self.raw_scores):
            users += [user_id] * len(ids)
            ranks += range(1, len(ids) + 1)
            items += ids
            scores += values
            raw += raws
        return {"user_id": users, "rank": ranks, "item_id": items, "score": scores, "raw_score": raw}

    def write(self, path: Path) -> Path:
        """Write as parquet or CSV, chosen by the file suffix; returns the path."""
        path = Path(path)
        suffix = _format_of(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        import pyarrow as pa

        columns = self.columns()
        table = pa.table(
            {
                "user_id": pa.array(columns["user_id"], pa.string()),
                "rank": pa.array(columns["rank"], pa.int32()),
                "item_id": pa.array(columns["item_id"], pa.string()),
                "score": pa.array(columns["score"], pa.float64()),
                "raw_score": pa.array(columns["raw_score"], pa.float64()),
            },
            metadata={"scene": self.scene, "k": str(self.k)},
        )
        tmp = path.with_name(path.name + ".tmp")
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            pq.write_table(table, tmp)
        else:
            import pyarrow.csv as pcsv

            pcsv.write_csv(table, tmp)
        tmp.replace(path)  # a reader never sees half a file
        return path


def _format_of(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ScenerecError(f"cannot write {path}: the file name must end in .parquet or .csv")
    return suffix


def read_scores(path: Path, scene: str = "", k: int = 0) -> BatchScores:
    """Read what `BatchScores.write` wrote: one file, or a directory of parts (read in name order)."""
    path = Path(path)
    files = sorted(p for p in path.iterdir() if p.suffix in FORMATS) if path.is_dir() else [path]
    result = BatchScores(scene=scene, k=k)
    for file in files:
        if _format_of(file) == ".parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(file)
            meta = table.schema.metadata or {}
            result.scene = result.scene or meta.get(b"scene", b"").decode()
            result.k = result.k or int(meta.get(b"k", b"0"))
        else:
            import pyarrow as pa
            import pyarrow.csv as pcsv

            types = {"user_id": pa.string(), "rank": pa.int32(), "item_id": pa.string(),
                     "score": pa.float64(), "raw_score": pa.float64()}
            table = pcsv.read_csv(file, convert_options=pcsv.ConvertOptions(column_types=types))
        data = table.to_pydict()
        missing = [c for c in COLUMNS if c not in data]
        if missing:
            raise ScenerecError(f"{file} is not a score file: no column {', '.join(missing)}")
        for user_id, rank, item_id, score, raw in zip(*(data[c] for c in COLUMNS)):
            if rank == 1 or not result.user_ids or result.user_ids[-1] != user_id:
                result.user_ids.append(user_id)
                result.item_ids.append([])
                result.scores.append([])
                result.raw_scores.append([])
            result.item_ids[-1].append(item_id)
            result.scores[-1].append(score)
            result.raw_scores[-1].append(raw)
    return result
