"""Exclusion lists: URLs or LAION hashes whose rows the build leaves out
(Re-LAION removal lists, opt-out lists).

A list is a text file with one URL or hash per line (blank lines and lines
starting with ``#`` are skipped; a line of digits, optionally signed, is a
hash), or a CSV file whose header has a ``url`` and/or ``hash`` column, or a
parquet file with such columns.
"""
import csv
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from .source import SourceError

HASH_RE = re.compile(r"^[+-]?\d+$")


def _hash(value):
    value = str(value).strip()
    if not HASH_RE.match(value):
        return None
    number = int(value)
    if not -(2**63) <= number < 2**64:
        return None
    if number >= 2**63:  # written as unsigned: the same 64 bits as LAION's int64
        number -= 2**64
    return str(number)


class ExclusionList:
    def __init__(self, path, urls, hashes):
        self.path = Path(path)
        self.urls = urls
        self.hashes = hashes
        self.rows_excluded = 0

    @classmethod
    def read(cls, path):
        path = Path(path)
        if not path.is_file():
            raise SourceError(f"{path}: exclusion list not found")
        urls, hashes = set(), set()
        if path.suffix.lower() == ".parquet":
            try:
                table = pq.read_table(path)
            except Exception as ex:
                raise SourceError(f"{path}: not a readable parquet file ({ex})") from None
            by_lower = {name.lower(): name for name in table.column_names}
            if "url" not in by_lower and "hash" not in by_lower:
                raise SourceError(f"{path}: exclusion list has neither a 'url' nor a 'hash' column")
            if "url" in by_lower:
                urls.update(v for v in table.column(by_lower["url"]).to_pylist() if v)
            if "hash" in by_lower:
                hashes.update(h for h in map(_hash, table.column(by_lower["hash"]).to_pylist()) if h is not None)
            return cls(path, urls, hashes)
        try:
            with path.open(newline="", encoding="utf-8-sig") as fp:
                first = ""
                for line in fp:
                    if line.strip() and not line.startswith("#"):
                        first = line
                        break
                fp.seek(0)
                header = [h.strip().lower() for h in next(csv.reader([first]), [])] if first else []
                if "url" in header or "hash" in header:
                    reader = csv.DictReader(line for line in fp if line.strip() and not line.startswith("#"))
                    for row in reader:
                        row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
                        if row.get("url"):
                            urls.add(row["url"])
                        if row.get("hash"):
                            value = _hash(row["hash"])
                            if value is None:
                                raise SourceError(
                                    f"{path}: line {reader.line_num}: hash {row['hash']!r} is not a 64-bit integer"
                                )
                            hashes.add(value)
                else:
                    for line in fp:
                        line = line.strip()
                        if not line or line.startswith("#"):
                            continue
                        value = _hash(line)
                        if value is not None:
                            hashes.add(value)
                        else:
                            urls.add(line)
        except (OSError, UnicodeDecodeError, csv.Error) as ex:
            raise SourceError(f"{path}: cannot read exclusion list ({ex})") from None
        return cls(path, urls, hashes)

    def mask(self, url_list, hash_list):
        """numpy bool: which rows this list excludes."""
        urls, hashes = self.urls, self.hashes
        return np.fromiter(
            ((u in urls) or (h in hashes) for u, h in zip(url_list, hash_list)),
            dtype=bool,
            count=len(url_list),
        )


class Exclusions:
    def __init__(self, lists):
        self.lists = lists

    def keep_mask(self, batch):
        """numpy bool of the rows to keep, or None to keep them all."""
        if not self.lists:
            return None
        url_list = batch.column("url").to_pylist()
        hash_list = batch.column("hash").to_pylist()
        drop = np.zeros(batch.num_rows, dtype=bool)
        for exclusion in self.lists:
            mask = exclusion.mask(url_list, hash_list)
            exclusion.rows_excluded += int(mask.sum())
            drop |= mask
        return ~drop

    def summary(self):
        return [
            {
                "name": e.path.name,
                "urls": len(e.urls),
                "hashes": len(e.hashes),
                "rows_excluded": e.rows_excluded,
            }
            for e in self.lists
        ]


def load_exclusions(paths):
    return Exclusions([ExclusionList.read(path) for path in paths or ()])
