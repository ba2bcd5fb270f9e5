"""The artists, celebrities and characters lists that the build counts."""
import csv
from pathlib import Path

NAME_TABLES = ("artists", "celebrities", "characters")
DEFAULT_NAMES_DIR = Path(__file__).parent / "data"


class NamesError(Exception):
    pass


def read_names_csv(path):
    """Rows of a names CSV as dicts; a ``name`` column is required. Blank names
    are skipped and repeats (ignoring case) kept once."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as fp:
            reader = csv.DictReader(fp)
            fields = [f.strip() for f in (reader.fieldnames or [])]
            if "name" not in fields:
                raise NamesError(f"{path}: no 'name' column (columns: {', '.join(fields) or 'none'})")
            rows, seen = [], set()
            for raw in reader:
                row = {k.strip(): (v.strip() if isinstance(v, str) else v) for k, v in raw.items() if k}
                name = row.get("name") or ""
                if not name or name.lower() in seen:
                    continue
                seen.add(name.lower())
                rows.append(row)
            return fields, rows
    except (OSError, UnicodeDecodeError, csv.Error) as ex:
        raise NamesError(f"{path}: cannot read names ({ex})") from None


def load_names(names_dir=None):
    """{table: (columns, rows)} for each names file present in ``names_dir``
    (default: the curated lists shipped in the package), and a list of notes
    about files that were missing."""
    directory = Path(names_dir) if names_dir else DEFAULT_NAMES_DIR
    found, notes = {}, []
    for table in NAME_TABLES:
        path = directory / f"{table}.csv"
        if not path.exists():
            notes.append(f"{path} not found: no {table} table")
            continue
        found[table] = read_names_csv(path)
    return found, notes
