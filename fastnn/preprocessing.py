"""Table columns to the numbers a network reads: missing values and categorical columns.

A `TablePreprocessor` is fitted on the training rows of a table's feature columns and
then turns any rows of the same columns into a float64 matrix, as scikit-learn's
ColumnTransformer of SimpleImputer(add_indicator=True) and
OneHotEncoder(handle_unknown="ignore") would:

- A numeric column: a missing cell becomes the column's median over the training rows
  (0 when it has none); when the training rows had missing cells, an indicator column
  "<name> (missing)" follows, 1 where the cell was missing.
- A categorical column (one whose cells are not all numbers): one column "<name>=<value>"
  per value seen in training, in sorted order, 1 where the cell holds it; a value never
  seen gives all zeros; a missing cell counts as the most frequent value (the first in
  sorted order on a tie), with an indicator column as above.
- A categorical column with more distinct values than `max_one_hot` (kind "codes", for
  an Embedding layer, fastnn.embedding): one column "<name>" holding the value's index
  among the sorted values seen in training, len(values) for a value never seen (one
  extra category, whose embedding the command line keeps at zero: a value never seen
  adds nothing, as its one-hot columns would); missing cells as above. `code_columns`
  and `cardinalities` say where these columns are and how many codes each has.

Missing cells are the strings of MISSING, NaN and None. A value is compared by its
`category_key`: a cell that reads as a number is keyed by that number ("1", "1.0" and
"1e0" are one value), anything else by its text. The fitted state is plain JSON values
(`to_config`), saved inside a model file and checked like the rest of its config when
read back (`from_config`): nothing in a file is executed.

    pre = TablePreprocessor().fit({"size": ["S", "M", None], "weight": [1.5, float("nan"), 2]})
    X = pre.transform({"size": ["M", "XL"], "weight": [None, 3.0]})   # (2, 6) float64
"""
import math

import numpy as np

__all__ = ["TablePreprocessor", "MISSING", "category_key", "is_missing"]

MISSING = frozenset({"", "NA", "N/A", "n/a", "NaN", "nan", "-nan", "-NaN", "NULL", "null",
                     "None", "#N/A"})
MAX_CATEGORIES = 1000    # a one-hot column with more distinct values is refused
MAX_CODES = 1 << 20      # a coded (embedded) column with more distinct values is refused
MAX_NAME = 1000          # characters of a column name or value kept in a model file


def is_missing(value):
    """Whether a cell is missing: None, NaN, or one of MISSING's strings."""
    if value is None:
        return True
    if isinstance(value, str):
        return value.strip() in MISSING
    try:
        return math.isnan(value)
    except TypeError:
        return False


def category_key(value, decimal="."):
    """The value a categorical cell stands for: a number's repr when it reads as one, else
    its text (stripped)."""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if not isinstance(value, str):
        try:
            return repr(float(value))
        except (TypeError, ValueError):
            return str(value).strip()
    text = value.strip()
    try:
        return repr(float(text if decimal == "." else text.replace(",", ".")))
    except ValueError:
        return text


class TablePreprocessor:
    """Missing values and categorical columns to numbers (see the module docstring).

    max_one_hot: a categorical column with more distinct values than this becomes a
    column of codes for an Embedding (None: every categorical column is one-hot encoded,
    up to MAX_CATEGORIES values).

    Attributes after fit: `columns`, one description per input column, in order: a dict
    with "name", "kind" ("numeric", "categorical" or "codes"), "fill" (the median, or the
    most frequent value's key), "indicator" (bool) and, for categorical and coded
    columns, "categories" (sorted keys); `input_names`; `output_names` (the matrix's
    columns); `code_columns` and `cardinalities` (the coded columns' places in the matrix
    and their numbers of codes, the unseen value's included).
    """

    def __init__(self, max_one_hot=None):
        if max_one_hot is not None and (isinstance(max_one_hot, bool) or not isinstance(
                max_one_hot, (int, np.integer)) or max_one_hot < 0):
            raise ValueError(f"max_one_hot must be None or a whole number >= 0, got "
                             f"{max_one_hot!r}")
        self.max_one_hot = max_one_hot
        self.columns = None

    def fit(self, table, names=None):
        """Learn each column's kind, fill value and categories from `table`: a pandas
        DataFrame, or a mapping of column name to a sequence of cells (`names` orders
        it). Cells may be numbers, strings or None."""
        columns = _columns_of(table, names)
        described = []
        for name, cells in columns.items():
            numbers = _as_numbers(cells)
            if numbers is not None:
                missing = np.isnan(numbers)
                present = numbers[~missing]
                if not np.isfinite(present).all():
                    raise ValueError(f"column {name!r} holds an infinite value")
                fill = float(np.median(present)) if present.size else 0.0
                described.append({"name": name, "kind": "numeric", "fill": fill,
                                  "indicator": bool(missing.any())})
                continue
            keys = [None if is_missing(c) else category_key(c) for c in cells]
            present = [k for k in keys if k is not None]
            values, counts = np.unique(np.array(present, dtype=object).astype(str),
                                       return_counts=True)
            coded = self.max_one_hot is not None and len(values) > self.max_one_hot
            most = MAX_CODES if coded else MAX_CATEGORIES
            if len(values) > most:
                raise ValueError(
                    f"column {name!r} has {len(values)} distinct values, more than the "
                    f"{most} a categorical column may have" + (
                        "" if coded else " one-hot encoded (give max_one_hot to embed it)"))
            fill = str(values[int(np.argmax(counts))]) if len(values) else ""
            described.append({"name": name, "kind": "codes" if coded else "categorical",
                              "categories": [str(v) for v in values], "fill": fill,
                              "indicator": len(present) < len(keys)})
        self.columns = described
        return self

    @property
    def input_names(self):
        return [c["name"] for c in self.columns]

    @property
    def output_names(self):
        names = []
        for c in self.columns:
            if c["kind"] == "categorical":
                names += [f"{c['name']}={v}" for v in c["categories"]]
            else:
                names.append(c["name"])
            if c["indicator"]:
                names.append(f"{c['name']} (missing)")
        return names

    @property
    def n_outputs(self):
        return len(self.output_names)

    @property
    def code_columns(self):
        """The matrix columns holding a coded column's codes, in order."""
        places, at = [], 0
        for c in self.columns:
            if c["kind"] == "codes":
                places.append(at)
            at += (len(c["categories"]) if c["kind"] == "categorical" else 1) \
                + c["indicator"]
        return places

    @property
    def cardinalities(self):
        """Each coded column's number of codes: its values seen in training, and one for
        a value never seen."""
        return [len(c["categories"]) + 1 for c in self.columns if c["kind"] == "codes"]

    def transform(self, table, decimal="."):
        """The float64 matrix of `table`'s rows (its columns taken by name; extra ones
        ignored); ValueError naming a column that is missing or a numeric column's cell
        that is not a number."""
        if self.columns is None:
            raise ValueError("this TablePreprocessor is not fitted yet")
        columns = _columns_of(table, None)
        absent = [c["name"] for c in self.columns if c["name"] not in columns]
        if absent:
            raise ValueError(f"the table lacks the columns {absent[:10]}")
        n = len(next(iter(columns.values()))) if columns else 0
        out = np.zeros((n, self.n_outputs))
        at = 0
        for c in self.columns:
            cells = columns[c["name"]]
            if c["kind"] == "numeric":
                numbers = _as_numbers(cells, decimal)
                if numbers is None:
                    bad = next(i for i, v in enumerate(cells)
                               if not is_missing(v) and _number(v, decimal) is None)
                    raise ValueError(f"column {c['name']!r}, row {bad + 1}: "
                                     f"{str(cells[bad])[:40]!r} is not a number")
                missing = np.isnan(numbers)
                if not np.isfinite(numbers[~missing]).all():
                    bad = int(np.flatnonzero(~missing & ~np.isfinite(numbers))[0])
                    raise ValueError(f"column {c['name']!r}, row {bad + 1}: "
                                     f"{numbers[bad]} is not a finite number")
                out[:, at] = np.where(missing, c["fill"], numbers)
                at += 1
            else:
                keys = [None if is_missing(v) else category_key(v, decimal) for v in cells]
                missing = np.array([k is None for k in keys], dtype=bool)
                index = {v: i for i, v in enumerate(c["categories"])}
                codes = np.array([index.get(c["fill"] if key is None else key, -1)
                                  for key in keys], dtype=np.int64).reshape(-1)
                if c["kind"] == "codes":  # an unknown value: the extra code
                    out[:, at] = np.where(codes < 0, len(c["categories"]), codes)
                    at += 1
                else:  # an unknown value: all zeros
                    known = np.flatnonzero(codes >= 0)
                    out[known, at + codes[known]] = 1.0
                    at += len(c["categories"])
            if c["indicator"]:
                out[:, at] = missing
                at += 1
        return out

    def fit_transform(self, table, names=None):
        return self.fit(table, names).transform(table)

    def to_config(self):
        """The fitted state as JSON values (saved inside a model file)."""
        return [dict(c) for c in self.columns]

    @classmethod
    def from_config(cls, config):
        """A fitted preprocessor from to_config's values, each checked (ValueError)."""
        if not isinstance(config, list) or not config or len(config) > 2**20:
            raise ValueError("preprocessing must be a non-empty list of columns")
        seen = set()
        for i, c in enumerate(config):
            if not isinstance(c, dict) or not isinstance(c.get("name"), str) \
                    or len(c["name"]) > MAX_NAME or c["name"] in seen \
                    or c.get("kind") not in ("numeric", "categorical", "codes") \
                    or type(c.get("indicator")) is not bool:
                raise ValueError(f"preprocessing column {i}: {str(c)[:100]}")
            seen.add(c["name"])
            if c["kind"] == "numeric":
                if set(c) != {"name", "kind", "fill", "indicator"} \
                        or type(c["fill"]) not in (int, float) or not math.isfinite(c["fill"]):
                    raise ValueError(f"preprocessing column {i}: {str(c)[:100]}")
            else:
                categories = c.get("categories")
                most = MAX_CATEGORIES if c["kind"] == "categorical" else MAX_CODES
                if set(c) != {"name", "kind", "categories", "fill", "indicator"} \
                        or not isinstance(categories, list) \
                        or len(categories) > most \
                        or not all(isinstance(v, str) and len(v) <= MAX_NAME
                                   for v in categories) \
                        or len(set(categories)) != len(categories) \
                        or not isinstance(c["fill"], str) or len(c["fill"]) > MAX_NAME:
                    raise ValueError(f"preprocessing column {i}: {str(c)[:100]}")
        pre = cls()
        pre.columns = [dict(c) for c in config]
        return pre

    def __repr__(self):
        if self.columns is None:
            return "TablePreprocessor()"
        kinds = [c["kind"] for c in self.columns]
        coded = kinds.count("codes")
        return (f"TablePreprocessor({kinds.count('numeric')} numeric, "
                f"{kinds.count('categorical')} one-hot" + (f", {coded} coded" if coded else "")
                + f" columns -> {self.n_outputs} features)")


def _columns_of(table, names):
    """{name: list or array of cells} of a DataFrame or a mapping."""
    if hasattr(table, "columns") and hasattr(table, "__getitem__") \
            and not isinstance(table, dict):
        return {str(name): table[name].tolist() for name in table.columns}
    if not isinstance(table, dict):
        raise TypeError(f"expected a DataFrame or a mapping of columns, got "
                        f"{type(table).__name__}")
    order = list(table) if names is None else list(names)
    lengths = {len(table[name]) for name in order}
    if len(lengths) > 1:
        raise ValueError("the columns have different lengths")
    return {str(name): table[name] for name in order}


def _number(value, decimal="."):
    """A cell as a float, NaN when missing, None when it is not a number."""
    if is_missing(value):
        return math.nan
    if isinstance(value, str):
        text = value.strip()
        try:
            return float(text if decimal == "." else text.replace(",", "."))
        except ValueError:
            return None
    if isinstance(value, (bool, np.bool_)):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _as_numbers(cells, decimal="."):
    """cells as a float64 array (NaN where missing), or None when one is not a number."""
    if isinstance(cells, np.ndarray) and cells.dtype.kind in "iuf":
        return cells.astype(np.float64)
    out = np.empty(len(cells))
    for i, value in enumerate(cells):
        number = _number(value, decimal)
        if number is None:
            return None
        out[i] = number
    return out
