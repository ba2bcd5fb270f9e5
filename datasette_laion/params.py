"""Malformed parameters, refused with a 400 that says what is wanted.

Datasette 0.65 answers some malformed parameters with a 500 (``_timelimit=abc``,
``x__in=[``, ``_through=junk``, ``_facet={``, an actor of /-/allow-debug it
cannot compare). These checks run before Datasette sees the request: on every
page (``check_common``), on /-/allow-debug, and on every table request (the
guard, guard.py). Each raises ``Refusal`` with the message for the page.
"""
import json

MAX_FACETS = 5  # facet parameters in one request, on any table


class Refusal(Exception):
    def __init__(self, title, message):
        super().__init__(message)
        self.title, self.message = title, message


def bad(message):
    return Refusal("Invalid request", message)


def split_filter(key):
    """(column, lookup) of a filter parameter, as Datasette reads it."""
    if "__" in key:
        column, lookup = key.rsplit("__", 1)
        return column, lookup
    return key, "exact"


def is_filter(key):
    """Datasette treats every parameter as a filter except _name ones."""
    return not (key.startswith("_") and "__" not in key)


def first(pairs, key):
    for k, v in pairs:
        if k == key:
            return v
    return None


def clip(value, length=60):
    value = str(value)
    return value if len(value) <= length else value[: length - 1] + "…"


def listing(names, limit=12):
    names = list(names)
    shown = ", ".join(names[:limit])
    return shown + (f" (and {len(names) - limit} more)" if len(names) > limit else "")


def check_common(pairs):
    """Checks for every database, table and query page: raises Refusal."""
    limit = first(pairs, "_timelimit")
    if limit and not (limit.isascii() and limit.isdigit()):
        raise bad(f"_timelimit: a number of milliseconds (it can only lower the time limit), not {clip(limit)!r}")


def check_allow_debug(pairs):
    """/-/allow-debug's actor and allow: JSON it can compare (Datasette 0.65
    fails with a 500 on others)."""

    def scalars(value):
        return all(isinstance(v, (str, int, float, bool)) or v is None for v in (value if isinstance(value, list) else [value]))

    for key, allowed in (("actor", (dict, type(None))), ("allow", (dict, bool, type(None)))):
        raw = first(pairs, key)
        if not raw:
            continue
        try:
            value = json.loads(raw)
        except ValueError:
            continue  # the page says so itself
        if not isinstance(value, allowed) or (isinstance(value, dict) and not all(scalars(v) for v in value.values())):
            raise bad(f"{key}: a JSON object of names and values, such as {{\"id\": \"root\"}}")


def check_json_params(pairs):
    """The JSON (or list) parameters of a table request, each of a shape
    Datasette can use; at most MAX_FACETS facets."""
    facets = 0
    for key, value in pairs:
        if key.startswith("_facet"):
            if key != "_facet_size":
                facets += 1
            if value.startswith("{"):
                try:
                    config = json.loads(value)
                except ValueError:
                    config = None
                if not isinstance(config, dict) or not isinstance(config.get("column", config.get("simple")), str):
                    raise bad(f'{key}: a column name, or JSON such as {{"simple": "column"}}, not {clip(value)!r}')
        elif key == "_through":
            try:
                through = json.loads(value)
            except ValueError:
                through = None
            if not (
                isinstance(through, dict)
                and all(isinstance(through.get(k), str) for k in ("table", "column"))
                and isinstance(through.get("value"), (str, int, float))
            ):
                raise bad('_through: JSON such as {"table": "t", "column": "c", "value": "v"}')
        elif is_filter(key) and split_filter(key)[1] in ("in", "notin") and value.startswith("["):
            try:
                values = json.loads(value)
            except ValueError:
                values = None
            if not isinstance(values, list) or not all(
                v is None or isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in values
            ):
                raise bad(f"{key}: a comma-separated list, or a JSON list of values, not {clip(value)!r}")
            if any(isinstance(v, int) and not -(2**63) <= v < 2**63 for v in values):
                raise bad(f"{key}: a number too large for the database")
    if facets > MAX_FACETS:
        raise bad(f"at most {MAX_FACETS} facets at a time")
