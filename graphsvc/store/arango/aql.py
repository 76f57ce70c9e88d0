"""Every AQL text the ArangoDB backend sends, in one place.

Rules, checked by `tests/store/arango/test_aql.py`: values travel only as bind
parameters (`@name`), collection names only as collection bind parameters
(`@@collection`), and attribute names as values too (`d[@attribute]`). No text here is
ever formatted with user data; the one query with a variable number of conditions
(`select_keys_query`) repeats a fixed condition with numbered placeholders.
"""

from __future__ import annotations

import re

# -- pulls ---------------------------------------------------------------------------
# `@attributes` holds "_key" plus the requested attribute names; KEEP leaves out the
# ones a document lacks, which the Arrow conversion turns into nulls. No SORT: a full
# scan comes back in the order of the server's internal document ids (RocksDB's
# documents column family, arangod/RocksDBEngine/RocksDBIterators.cpp), not by `_key`:
# stable while nothing is written, and a replaced or updated document moves (it gets a
# new id). A SORT would make the server hold the whole collection before the first batch.
PULL_ATTRIBUTES = """
FOR d IN @@collection
  RETURN KEEP(d, @attributes)
"""

PULL_REVISIONS = """
FOR d IN @@collection
  RETURN [d._key, d._rev]
"""

PULL_EDGES = """
FOR e IN @@collection
  RETURN [e._from, e._to]
"""

# -- pulls by key range (a read task each: graphsvc.distributed.pull) ---------------------
# Bounds as bind parameters: `@low` inclusive ("" for the first range: every key is a
# non-empty string, and "" sorts before every string), `@high` exclusive; the last range
# has no upper bound, hence the `_FROM` texts. The filter and SORT on `_key` are served by
# the primary index, which the RocksDB engine keeps sorted by key: a range scan that comes
# back in key order, streamed (no sort buffering the range before the first batch).
PULL_KEY_RANGE = """
FOR d IN @@collection
  FILTER d._key >= @low && d._key < @high
  SORT d._key
  RETURN KEEP(d, @attributes)
"""

PULL_KEY_RANGE_FROM = """
FOR d IN @@collection
  FILTER d._key >= @low
  SORT d._key
  RETURN KEEP(d, @attributes)
"""

PULL_EDGE_RANGE = """
FOR e IN @@collection
  FILTER e._key >= @low && e._key < @high
  SORT e._key
  RETURN [e._from, e._to]
"""

PULL_EDGE_RANGE_FROM = """
FOR e IN @@collection
  FILTER e._key >= @low
  SORT e._key
  RETURN [e._from, e._to]
"""

# A sample of the keys, sorted by the server (the order the range filters compare in):
# every key whose HASH falls in one of `@every` buckets; the range bounds are its
# quantiles. One pass over the primary index, `count / @every` keys over the wire.
SAMPLE_KEYS = """
FOR d IN @@collection
  FILTER HASH(d._key) % @every == 0
  SORT d._key
  RETURN d._key
"""

# -- documents by key ------------------------------------------------------------------
GET_DOCUMENTS = """
FOR d IN @@collection
  FILTER d._key IN @keys
  RETURN d
"""

# The same with only the asked attributes (and the system ones): the service's `fields=`
# then moves no vectors over the wire. KEEP takes an array of attribute names.
GET_DOCUMENT_ATTRIBUTES = """
FOR d IN @@collection
  FILTER d._key IN @keys
  RETURN KEEP(d, @attributes)
"""

# The first key in `@keys` without a document: primary-index lookups that never load
# the documents themselves.
FIRST_MISSING_KEY = """
FOR k IN @keys
  LET found = (FOR d IN @@collection FILTER d._key == k LIMIT 1 RETURN true)
  FILTER LENGTH(found) == 0
  LIMIT 1
  RETURN k
"""

REMOVE_DOCUMENTS = """
FOR d IN @@collection
  FILTER d._key IN @keys
  REMOVE d IN @@collection
  RETURN true
"""

# Attribute write-back. One query per chunk (all-or-nothing on a single server): a
# document that vanished since the existence check fails the chunk instead of being
# created as a stub (which the import API's onDuplicate=update would do). Whole
# attribute values are replaced, as the embedded store does, hence mergeObjects: false;
# a null clears the attribute, as on the embedded store, hence keepNull: false, which
# removes it (https://docs.arangodb.com/3.12/aql/high-level-operations/update/#keepnull).
UPDATE_ATTRIBUTES = """
FOR row IN @rows
  UPDATE row IN @@collection OPTIONS { mergeObjects: false, keepNull: false }
"""

# -- select keys by equality -------------------------------------------------------------
_SELECT_KEYS_FROM = """
FOR d IN @@collection
"""

_SELECT_KEYS_RETURN = """
  SORT d._key
  RETURN d._key
"""


def select_keys_query(condition_count: int) -> str:
    """The keys query for `condition_count` equality conditions; the caller binds
    `attr_0`/`value_0`, `attr_1`/`value_1`, … (names and values both as data)."""
    conditions = "".join(
        "  FILTER d[@attr_" + str(n) + "] == @value_" + str(n) + "\n" for n in range(condition_count)
    )
    return _SELECT_KEYS_FROM + conditions + _SELECT_KEYS_RETURN


# -- dangling edges ----------------------------------------------------------------------------
# `@existing`: names of the collections that exist. The `||` short-circuits, so
# DOCUMENT() is only asked about ids whose collection exists.
_DANGLING_EDGES = """
FOR e IN @@collection
  FILTER PARSE_IDENTIFIER(e._from).collection NOT IN @existing
      || DOCUMENT(e._from) == null
      || PARSE_IDENTIFIER(e._to).collection NOT IN @existing
      || DOCUMENT(e._to) == null
"""

COUNT_DANGLING_EDGES = _DANGLING_EDGES + """
  COLLECT WITH COUNT INTO dangling
  RETURN dangling
"""

DANGLING_EDGE_EXAMPLES = _DANGLING_EDGES + """
  SORT e._key
  LIMIT @examples
  RETURN { _key: e._key, _from: e._from, _to: e._to }
"""

# -- job state and change markers (collection graphsvc_state) -------------------------------
GET_STATE = """
FOR s IN @@collection
  FILTER s._key == @key
  RETURN s.value
"""

PUT_STATE = """
INSERT { _key: @key, key: @name, value: @value } INTO @@collection
  OPTIONS { overwriteMode: "replace" }
"""

DELETE_STATE = """
FOR s IN @@collection
  FILTER s._key == @key
  REMOVE s IN @@collection
"""

GET_CHANGE_MARKER = """
FOR s IN @@collection
  FILTER s._key == @key
  RETURN s.marker
"""

BUMP_CHANGE_MARKER = """
UPSERT { _key: @key }
  INSERT { _key: @key, collection: @name, marker: 1 }
  UPDATE { marker: OLD.marker + 1 }
  IN @@collection
  RETURN NEW.marker
"""

# -- structured filters (graphsvc serve / --filter) -------------------------------------------
# One fixed condition per operator; condition n binds `attr_n` (the attribute name, as
# data) and `value_n`. Ranges only compare values of the bound's type (TYPENAME is
# "number" for integers and doubles alike), so a missing attribute (null) is never "less
# than 20". The parts are joined with the condition's number between them.
_CONDITIONS = {
    "eq": ("d[@attr_", "] == @value_", ""),
    "ne": ("d[@attr_", "] != @value_", ""),
    "in": ("d[@attr_", "] IN @value_", ""),
    "lt": ("TYPENAME(d[@attr_", "]) == TYPENAME(@value_", ") && d[@attr_", "] < @value_"),
    "lte": ("TYPENAME(d[@attr_", "]) == TYPENAME(@value_", ") && d[@attr_", "] <= @value_"),
    "gt": ("TYPENAME(d[@attr_", "]) == TYPENAME(@value_", ") && d[@attr_", "] > @value_"),
    "gte": ("TYPENAME(d[@attr_", "]) == TYPENAME(@value_", ") && d[@attr_", "] >= @value_"),
}


def _condition(n: int, op: str) -> str:
    parts = _CONDITIONS[op]  # KeyError for an unknown operator: callers validate first
    if len(parts) == 3:
        return parts[0] + str(n) + parts[1] + str(n)
    return parts[0] + str(n) + parts[1] + str(n) + parts[2] + str(n) + parts[3] + str(n)


def filter_lines(operators) -> str:
    """FILTER lines for conditions with these operators, numbered 0, 1, … in order."""
    return "".join("  FILTER " + _condition(n, op) + "\n" for n, op in enumerate(operators))


def filter_keys_query(operators) -> str:
    """Keys of the documents matching the conditions (binds `@@collection`, `attr_n`, `value_n`)."""
    return "FOR d IN @@collection\n" + filter_lines(operators) + "  RETURN d._key\n"


# -- vector search (ArangoDB >= 3.12.4 with a vector index) ------------------------------------
def single_filter_line(operators) -> str:
    """All conditions as one `FILTER (a) AND (b) …` line, empty without conditions.

    One FILTER, because the server's `use-vector-index` rule (arangod, useVectorIndexRule,
    3.12.6+) looks for exactly one FILTER node between the FOR and the SORT and pushes
    it into the vector lookup; a second FILTER node stops the rule, and the query then
    fails with error 1554 (vector search not applied). The manual says the same: "a single
    FILTER" (https://docs.arangodb.com/3.12/aql/functions/vector/)."""
    conditions = [_condition(n, op) for n, op in enumerate(operators)]
    if not conditions:
        return ""
    return "  FILTER " + " AND ".join("(" + c + ")" for c in conditions) + "\n"


def approx_near_cosine_filtered_query(operators, excluding_key: bool, n_probe: bool = True) -> str:
    """APPROX_NEAR_COSINE top-`@k`: the conditions as one FILTER inside the vector search
    (applied during the index lookup from 3.12.6; refused with error 1554 by 3.12.4–3.12.5),
    `nProbe` cells searched (binds `n_probe`, the function's options — without it the
    index's `defaultNProbe` applies) and, for "similar to this document", the document
    itself dropped from `@limit` = k + 1 candidates (binds `key`). `LIMIT` is an upper
    bound: only the `nProbe` nearest cells are searched, so a selective filter can leave
    fewer than k hits (https://docs.arangodb.com/3.12/aql/functions/vector/)."""
    options = ", { nProbe: @n_probe }" if n_probe else ""
    inner = (
        "FOR d IN @@collection\n"
        + single_filter_line(operators)
        + "  LET score = APPROX_NEAR_COSINE(d[@attribute], @query_vector" + options + ")\n"
        + "  SORT score DESC\n"
    )
    if not excluding_key:
        return inner + "  LIMIT @k\n  RETURN { _key: d._key, score: score }\n"
    return (
        "FOR hit IN (\n"
        + inner
        + "  LIMIT @limit\n  RETURN { _key: d._key, score: score })\n"
        + "  FILTER hit._key != @key\n  LIMIT @k\n  RETURN hit\n"
    )


# What a vector index needs to be built: how many documents hold a vector, and how many
# hold something else than `@dimension` numbers (the index refuses those). One pass; the
# aggregate functions are those COLLECT AGGREGATE allows
# (https://docs.arangodb.com/3.12/aql/high-level-operations/collect/).
VECTOR_COUNTS = """
FOR d IN @@collection
  LET v = d[@attribute]
  COLLECT AGGREGATE
    documents = COUNT(),
    vectors = SUM(v == null ? 0 : 1),
    other = SUM(v != null && (NOT IS_ARRAY(v) || LENGTH(v) != @dimension) ? 1 : 0)
  RETURN { documents, vectors, other }
"""

# Examples of documents without a vector (`@missing` true) or with one of another
# dimension (false), to name them in an error.
VECTOR_PROBLEM_KEYS = """
FOR d IN @@collection
  LET v = d[@attribute]
  FILTER @missing ? v == null : (v != null && (NOT IS_ARRAY(v) || LENGTH(v) != @dimension))
  LIMIT @examples
  RETURN d._key
"""


# -- checks on the texts themselves ------------------------------------------------------------
_PLACEHOLDER = re.compile(r"@@?[A-Za-z0-9][A-Za-z0-9_]*")
_STRING_LITERAL = re.compile(r'"(?:[^"\\]|\\.)*"|' + r"'(?:[^'\\]|\\.)*'|`[^`]*`")
_FORMAT_FIELD = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}|\{\d*\}|%[sdr(]")


def bind_parameter_names(query: str) -> set[str]:
    """The bind parameters a query expects, spelled as python-arango's `bind_vars` keys
    (`@collection` for `@@collection`, `keys` for `@keys`)."""
    return {match.group(0)[1:] for match in _PLACEHOLDER.finditer(_STRING_LITERAL.sub("", query))}


def unsafe_parts(query: str) -> list[str]:
    """What would let data into a query's text: placeholders inside string literals
    (they would be text, not parameters), Python format fields, and string literals
    other than fixed option words. Empty for a safe query."""
    problems = []
    for literal in _STRING_LITERAL.findall(query):
        if not re.fullmatch(r"""["'][A-Za-z]+["']""", literal):
            problems.append(f"string literal {literal}")
    problems.extend(f"format field {field}" for field in _FORMAT_FIELD.findall(query))
    return problems


# the complete queries (fragments start with an underscore)
QUERIES: dict[str, str] = {
    name: value
    for name, value in dict(globals()).items()
    if name.isupper() and not name.startswith("_") and isinstance(value, str)
}
