"""Row filters of the build (``--min-aesthetic X``, ``--max-punsafe X``,
``--min-similarity X``):
only rows that meet every condition are loaded.

A condition is checked on the value as the database stores it (the float32
scores as their shortest decimal, ``read.normalise``), so that every row of
the database meets it. A NULL (or NaN) value meets none. The build reads a row
group's filter columns first and decodes its other columns only when some of
its rows match (``partition.py``), so a filter that keeps few rows reads little
more than its own columns, and memory does not grow with the source.
"""
import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .source import SourceError

COMPARE = {">=": pc.greater_equal, "<=": pc.less_equal}


@dataclass(frozen=True)
class Condition:
    column: str  # an images column
    op: str  # a key of COMPARE
    value: float
    option: str  # the CLI option that asks for it, for messages

    def text(self):
        return f"{self.column} {self.op} {_number(self.value)}"


def _number(value):
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def conditions(min_aesthetic=None, max_punsafe=None, min_similarity=None):
    """The conditions the options ask for (none: an empty tuple)."""
    found = []
    if min_aesthetic is not None:
        found.append(Condition("aesthetic", ">=", float(min_aesthetic), "--min-aesthetic"))
    if max_punsafe is not None:
        found.append(Condition("punsafe", "<=", float(max_punsafe), "--max-punsafe"))
    if min_similarity is not None:
        found.append(Condition("similarity", ">=", float(min_similarity), "--min-similarity"))
    for condition in found:
        if not math.isfinite(condition.value):
            raise SourceError(f"{condition.option} {condition.value}: give a finite number")
    return tuple(found)


def check(conditions, sources):
    """Refuse a condition on a column that a file's profile does not have."""
    for condition in conditions:
        for source in sources:
            if condition.column not in source.columns:
                profile = source.profile
                raise SourceError(
                    f"{condition.option} {_number(condition.value)}: {source.path} is of profile {profile.name} "
                    f"({profile.title}), which has no {condition.column} column; leave {condition.option} out"
                )


def describe(conditions):
    """The filter as build_info and the summary say it, or None."""
    return " and ".join(c.text() for c in conditions) or None


def columns(conditions):
    """The images columns the conditions read, each once."""
    return list(dict.fromkeys(c.column for c in conditions))


def mask(conditions, values):
    """numpy bool: the rows meeting every condition; ``values``: images
    column -> normalised array (float64, NULL for NULL and NaN)."""
    keep = None
    for condition in conditions:
        met = COMPARE[condition.op](values[condition.column], pa.scalar(condition.value, pa.float64()))
        met = met.fill_null(False).to_numpy(zero_copy_only=False)
        keep = met if keep is None else keep & met
    return np.asarray(keep, dtype=bool)
