"""Random access to a token dataset's samples on any fsspec URL."""

from __future__ import annotations

import bisect
import hashlib
import posixpath
from collections import OrderedDict
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from forgeline import storage
from forgeline.datasets.build import TOKENS_COLUMN
from forgeline.datasets.config import DatasetManifest
from forgeline.datasets.tokenizer import numpy_dtype
from forgeline.errors import ConfigError, IntegrityError


def load_manifest(manifest_url: str) -> DatasetManifest:
    if not storage.exists(manifest_url):
        raise ConfigError("manifest_url", manifest_url, "no dataset manifest here")
    return DatasetManifest.model_validate(storage.read_json(manifest_url))


class TokenDataset:
    """Samples of one split as arrays of ``sample_tokens`` (the manifest's ``token_dtype``);
    indexable, picklable.

    Reads one Parquet row group per miss and keeps the last ``cached_row_groups`` decoded,
    so sequential and nearby reads touch storage once per group.
    """

    def __init__(self, manifest_url: str, split: str = "train", cached_row_groups: int = 8):
        self.manifest_url = manifest_url
        self.manifest = load_manifest(manifest_url)
        if split not in self.manifest.splits:
            raise ConfigError("split", split, f"not in {sorted(self.manifest.splits)}")
        self.split = split
        self.shards = self.manifest.splits[split].shards
        self._firsts = [s.first_index for s in self.shards]
        self.token_dtype = numpy_dtype(self.manifest.token_dtype)
        self._base = posixpath.dirname(manifest_url)
        self._cached_row_groups = cached_row_groups
        self._files: dict[int, pq.ParquetFile] = {}
        self._groups: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return self.manifest.splits[self.split].samples

    @property
    def sample_tokens(self) -> int:
        return self.manifest.sample_tokens

    def shard_url(self, shard: int) -> str:
        return storage.join(self._base, self.shards[shard].path)

    def _file(self, shard: int) -> pq.ParquetFile:
        if shard not in self._files:
            fs, path = storage.filesystem(self.shard_url(shard))
            self._files[shard] = pq.ParquetFile(fs.open(path, "rb"))
        return self._files[shard]

    def _locate(self, index: int) -> tuple[int, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} out of range [0, {len(self)})")
        shard = bisect.bisect_right(self._firsts, index) - 1
        return shard, index - self._firsts[shard]

    def _row_group(self, shard: int, group: int) -> np.ndarray:
        key = (shard, group)
        if key in self._groups:
            self._groups.move_to_end(key)
            return self._groups[key]
        column = self._file(shard).read_row_group(group, columns=[TOKENS_COLUMN]).column(0)
        flat = np.frombuffer(column.combine_chunks().buffers()[1], dtype=self.token_dtype)
        rows = flat[: len(column) * self.sample_tokens].reshape(-1, self.sample_tokens)
        self._groups[key] = rows
        if len(self._groups) > self._cached_row_groups:
            self._groups.popitem(last=False)
        return rows

    def __getitem__(self, index: int) -> np.ndarray:
        shard, row = self._locate(int(index))
        rows_per_group = self._file(shard).metadata.row_group(0).num_rows
        return self._row_group(shard, row // rows_per_group)[row % rows_per_group]

    def get_many(self, indices: Any) -> np.ndarray:
        """Samples at ``indices`` stacked into ``[len(indices), sample_tokens]``."""
        return np.stack([self[i] for i in indices]) if len(indices) else np.empty(
            (0, self.sample_tokens), dtype=self.token_dtype
        )

    def verify(self) -> None:
        """Check every shard of the split against its recorded size and SHA-256."""
        for i, shard in enumerate(self.shards):
            fs, path = storage.filesystem(self.shard_url(i))
            data = fs.cat_file(path)
            if len(data) != shard.bytes or hashlib.sha256(data).hexdigest() != shard.sha256:
                raise IntegrityError(f"shard {shard.path} of {self.manifest_url} is corrupt")

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_files"], state["_groups"] = {}, OrderedDict()
        return state
