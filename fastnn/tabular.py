"""Reading your own data for the command line: CSV, .npz, a pair of .npy files, Parquet.

A table becomes features X (float64) and, when the file has them, raw targets y. What
the targets say decides the task (see `encode_target`). Every problem with a file is a
DataError (a ValueError) naming the file and, for text files, the line and the column,
raised before anything is trained or written.
"""
import csv
import itertools
import math
import os
from array import array
from collections import Counter

import numpy as np

from ._csv_arrow import MAX_LINE_CHARS
from ._csv_arrow import read_csv as read_csv_arrow
from .preprocessing import TablePreprocessor, category_key, is_missing

__all__ = ["DataError", "Table", "TablePreprocessor", "read_table", "concat_columns",
           "encode_target", "decode_labels"]


class DataError(ValueError):
    """A data file that cannot be used, with where and why."""


class Table:
    """Features X (n, d) float64, targets y (n,) as read (strings or numbers) or None, the
    names of the feature columns and the target column (None for arrays), and for a text
    file each row's line in it (else None).

    A table with missing cells or categorical columns has X None and `columns` instead:
    {name: cells}, a float64 array with NaN where a cell is missing, or a list of
    category keys (fastnn.preprocessing.category_key) with None where missing, to be
    turned into numbers by a TablePreprocessor."""

    def __init__(self, X, y, feature_names, target_name, lines=None, columns=None):
        self.X, self.y = X, y
        self.feature_names, self.target_name = feature_names, target_name
        self.lines = lines
        self.columns = columns

    def __len__(self):
        return len(self.X) if self.X is not None else \
            len(next(iter(self.columns.values())))

    def rows(self, start, stop):
        """The table of rows [start, stop)."""
        return Table(None if self.X is None else self.X[start:stop],
                     None if self.y is None else self.y[start:stop], self.feature_names,
                     self.target_name, None if self.lines is None else self.lines[start:stop],
                     None if self.columns is None else
                     {k: v[start:stop] for k, v in self.columns.items()})

    def as_columns(self):
        """{name: cells} of the feature columns, whichever way they are held."""
        if self.columns is not None:
            return self.columns
        return {name: self.X[:, j] for j, name in enumerate(self.feature_names)}


def concat_columns(parts):
    """The rows of several {name: cells} tables of the same columns (as Table.as_columns
    gives them), in order: a column numeric in every part stays a float64 array; one
    that is text in some part becomes category keys throughout (NaN to None, a number to
    its key, as the CSV reader does when a column turns out to hold text)."""
    joined = {}
    for name in parts[0]:
        cells = [part[name] for part in parts]
        if all(isinstance(c, np.ndarray) for c in cells):
            joined[name] = np.concatenate(cells)
        else:
            joined[name] = [key for c in cells for key in (
                c if not isinstance(c, np.ndarray)
                else [None if math.isnan(v) else repr(float(v)) for v in c])]
    return joined


def read_table(paths, target=None, features=None, need_target=True, rows=None, sep=None,
               decimal="."):
    """Read DATA as the command line names it: one CSV, .npz or Parquet file, or two .npy
    files (features, then targets).

    rows: a function n -> (start, stop) choosing a block of the file's n rows (a
    data-parallel process's shard): .npy features are memory-mapped, so only that block
    is read and checked; the other formats are parsed whole, then sliced.

    target: the target column's name (CSV, Parquet; default the last column) or, for
    .npz, the targets' key (default "y"). features: the feature columns' names (default
    every column but the target). need_target=False (predict): the target column may be
    missing, and features default to every column.

    CSV only: sep is the field separator (None: the one of ",", ";", tab and "|" that the
    header line holds most often, outside quotes; "," when it holds none); decimal the
    decimal mark of its numbers ("." or ","). A UTF-8 byte-order mark (Excel's "CSV
    UTF-8") is not part of the first column's name.
    """
    if decimal not in (".", ","):
        raise DataError(f"decimal must be '.' or ',', got {decimal!r}")
    if sep is not None and (len(sep) != 1 or sep in '"\r\n' or sep == decimal):
        raise DataError(f"sep must be one character other than a quote, a line end or the "
                        f"decimal mark, got {sep!r}")
    paths = [os.fspath(p) for p in paths]
    for path in paths:
        if not os.path.isfile(path):
            raise DataError(f"{path}: no such file")
    kinds = [_kind(path) for path in paths]
    if len(paths) == 2:
        if kinds != ["npy", "npy"]:
            raise DataError(f"two data files must be .npy files (features, then targets); "
                            f"got {paths[0]} and {paths[1]}")
        return _read_npy(paths[0], paths[1], rows)
    if len(paths) != 1:
        raise DataError(f"give one data file, or two .npy files; got {len(paths)} paths")
    table = _read_one(paths[0], kinds[0], target, features, need_target, sep, decimal)
    if rows is not None:
        table = table.rows(*rows(len(table)))
    return table


def _read_one(path, kind, target, features, need_target, sep=None, decimal="."):
    if kind == "csv":
        return _read_csv(path, target, features, need_target, sep, decimal)
    if kind == "parquet":
        header, frame = _read_parquet_rows(path)
        return _from_frame(path, header, frame, target, features, need_target)
    if kind == "npz":
        return _read_npz(path, target or "y", need_target)
    if kind == "npy":
        if need_target:
            raise DataError(f"{path}: a single .npy file holds no targets; give the "
                            f"targets as a second .npy file")
        return _read_npy(path, None, None)
    raise DataError(f"{path}: unknown data format (expected .csv, .npz, .npy or .parquet)")


def _kind(path):
    name = path.lower()
    for suffix, kind in ((".csv", "csv"), (".csv.gz", "csv"), (".npz", "npz"),
                         (".npy", "npy"), (".parquet", "parquet"), (".pq", "parquet")):
        if name.endswith(suffix):
            return kind
    return None


def _read_csv(path, target, features, need_target, sep, decimal):
    """A Table from a CSV file with a header row, read by pyarrow's reader where pyarrow
    is installed (_read_csv_fast); a file it does not take exactly (blank lines, fields
    spanning lines, gzip, and every file with an error) is read one record at a time:
    each row's features become float64 as it is read (a column's category keys once it
    holds text), and the first bad cell stops the read. Errors name the line where the
    record starts (a quoted field may span lines)."""
    table = _read_csv_fast(path, target, features, need_target, sep, decimal)
    if table is not None:
        return table
    opener = _gzip_open if path.lower().endswith(".gz") else open
    line = 1
    try:
        with opener(path, newline="", encoding="utf-8-sig") as f:
            lines_read = _bounded_lines(f, path)
            first = next(lines_read, "")
            if sep is None:
                sep = _separator(first)
            reader = csv.reader(itertools.chain([first], lines_read), delimiter=sep)
            header = next(reader, None)
            if not header:
                raise DataError(f"{path}: the file is empty (expected a header row)")
            header = [name.strip() for name in header]
            _check_unique(path, header)
            feature_names, target_name = _columns(path, header, target, features,
                                                  need_target)
            index = {name: i for i, name in enumerate(header)}
            wanted = [index[name] for name in feature_names]
            target_at = None if target_name is None else index[target_name]
            # the features row by row as numbers (NaN where missing); a column with a cell
            # that is not a number is categorical from then on: its category keys (None
            # where missing) go to a list of their own, and NaN stands in the rows
            values, keys = array("d"), [None] * len(wanted)
            y, lines = [], array("q")
            line = reader.line_num + 1
            for row in reader:
                if row:  # (blank lines are skipped)
                    if len(row) != len(header):
                        raise DataError(f"{path}, line {line}: {len(row)} fields, but the "
                                        f"header has {len(header)}")
                    for k, j in enumerate(wanted):
                        if keys[k] is None:
                            value = _number(row[j], path, line, header[j], decimal)
                            if value is not None:
                                values.append(value)
                                continue
                            keys[k] = [None if math.isnan(v) else repr(v)
                                       for v in values[k::len(wanted)]]
                        keys[k].append(None if is_missing(row[j])
                                       else category_key(row[j], decimal))
                        values.append(math.nan)
                    lines.append(line)
                    if target_at is not None:
                        y.append(row[target_at].strip())
                        if need_target and not y[-1]:
                            raise DataError(f"{path}, line {line}, column {target_name!r}: "
                                            f"the target is missing")
                line = reader.line_num + 1
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a UTF-8 text file ({exc.reason} at byte "
                        f"{exc.start})") from None
    except csv.Error as exc:  # an unclosed quote, a field over the csv module's limit
        raise DataError(f"{path}, line {line}: not a readable CSV record ({exc})") from None
    if not lines:
        raise DataError(f"{path}: no data rows after the header")
    y = np.array(y) if target_name is not None else None
    lines = np.frombuffer(lines, dtype=np.int64)
    X = np.frombuffer(values, dtype=np.float64).reshape(len(lines), len(feature_names))
    if all(k is None for k in keys) and not np.isnan(X).any():
        return Table(X.copy(), y, feature_names, target_name, lines)
    columns = {name: X[:, k].copy() if keys[k] is None else keys[k]
               for k, name in enumerate(feature_names)}
    return Table(None, y, feature_names, target_name, lines, columns)


def _read_csv_fast(path, target, features, need_target, sep, decimal):
    """The Table pyarrow's CSV reader makes of the file (fastnn._csv_arrow), or None for
    the record loop to read."""
    return read_csv_arrow(path, target, features, need_target, sep, decimal, _columns,
                          Table)


def _bounded_lines(f, path):
    """f's lines, refusing one longer than MAX_LINE_CHARS before more of it is read (a
    file of one huge field would otherwise be held whole, several times over)."""
    number = 0
    while True:
        line = f.readline(MAX_LINE_CHARS + 1)
        if not line:
            return
        number += 1
        if len(line) > MAX_LINE_CHARS:
            raise DataError(f"{path}, line {number}: longer than {MAX_LINE_CHARS:,} "
                            f"characters (not a table this reader takes)")
        yield line


def _separator(header_line):
    """The field separator a header line uses: the most frequent of ",", ";", tab and "|"
    outside quotes (",": none of them)."""
    counts = Counter(_unquoted(header_line))
    best = max(",;\t|", key=lambda c: counts[c])
    return best if counts[best] else ","


def _unquoted(text):
    """The characters of `text` outside double quotes."""
    inside = False
    for char in text:
        if char == '"':
            inside = not inside
        elif not inside:
            yield char


def _check_unique(path, header):
    """Column names must be unique (linear in the number of columns)."""
    counts = Counter(header)
    duplicated = sorted(name for name, count in counts.items() if count > 1)
    if duplicated:
        raise DataError(f"{path}, line 1: column names appear twice: {duplicated[:12]}"
                        + (f" and {len(duplicated) - 12} more" if len(duplicated) > 12 else ""))


def _gzip_open(path, **kwargs):
    import gzip
    return gzip.open(path, "rt", **kwargs)


def _read_parquet_rows(path):
    try:
        import pandas as pd
        frame = pd.read_parquet(path)
    except ImportError as exc:
        raise DataError(f"{path}: reading Parquet needs pandas and pyarrow "
                        f"(pip install pandas pyarrow): {exc}") from None
    except Exception as exc:  # pyarrow's own errors for a damaged file
        raise DataError(f"{path}: not a readable Parquet file ({exc})") from None
    header = [str(name) for name in frame.columns]
    return header, frame


def _columns(path, header, target, features, need_target):
    """(feature names, target name or None) of a table with these column names. With
    need_target the target column (default the last) must be there; without it (predict)
    no target is read and the features default to every column."""
    target_name = None
    if need_target:
        target_name = target if target is not None else header[-1]
        if target_name not in header:
            raise DataError(f"{path}: no target column {target_name!r} (columns: "
                            f"{_shorten(header)})")
    if features is None:
        feature_names = [h for h in header if h != target_name]
    else:
        feature_names = list(features)
        present = set(header)
        missing = [f for f in feature_names if f not in present]
        if missing:
            raise DataError(f"{path}: no feature column(s) {missing} (columns: "
                            f"{_shorten(header)})")
        if target_name in feature_names:
            raise DataError(f"{path}: column {target_name!r} is both the target and a "
                            f"feature")
    if not feature_names:
        raise DataError(f"{path}: no feature columns besides the target {target_name!r}")
    return feature_names, target_name


def _from_frame(path, header, frame, target, features, need_target):
    """A Table from a DataFrame's named columns (Parquet): numeric columns as numbers
    (NaN or None where missing), any other as a categorical column."""
    _check_unique(path, header)
    feature_names, target_name = _columns(path, header, target, features, need_target)
    columns = {}
    for name in feature_names:
        column = frame[frame.columns[header.index(name)]]
        if column.dtype.kind in "biuf":
            cells = columns[name] = column.to_numpy(dtype=np.float64, na_value=np.nan)
            bad = np.flatnonzero(np.isinf(cells))
            if len(bad):
                raise DataError(f"{path}, row {bad[0] + 1}, column {name!r}: "
                                f"{cells[bad[0]]} is not a finite number")
        else:
            columns[name] = [None if is_missing(v) else category_key(v)
                             for v in column.tolist()]
    y = None
    if target_name is not None:
        y = frame[frame.columns[header.index(target_name)]].to_numpy()
        if y.dtype == object:
            y = y.astype(str)
        if need_target and y.dtype.kind in "US":
            empty = np.flatnonzero(np.char.str_len(y) == 0)
            if len(empty):
                raise DataError(f"{path}, row {empty[0] + 1}, column {target_name!r}: the "
                                f"target is missing")
    if all(isinstance(c, np.ndarray) and not np.isnan(c).any() for c in columns.values()):
        X = np.column_stack([columns[name] for name in feature_names])
        return Table(np.ascontiguousarray(X), y, feature_names, target_name)
    return Table(None, y, feature_names, target_name, columns=columns)


def _number(text, path, line, name, decimal="."):
    """A CSV cell as a number: NaN where it is missing, None where it is text (a
    categorical column's); a number that is not finite is an error."""
    try:
        value = float(text if decimal == "." else text.replace(",", "."))
    except ValueError:
        if is_missing(text):
            return math.nan
        if decimal == "." and "," in text and _is_number(text.replace(",", ".")):
            raise DataError(f"{path}, line {line}, column {name!r}: {text[:40]!r} is not a "
                            f"number (a decimal comma? give --decimal ,)") from None
        return None
    if not math.isfinite(value):
        if math.isnan(value):
            return value  # "nan", "NaN": missing
        raise DataError(f"{path}, line {line}, column {name!r}: {value} is not a finite "
                        f"number")
    return value


def _is_number(value):
    try:
        float(value)
        return True
    except (TypeError, ValueError):
        return False


def _shorten(names, most=12):
    return ", ".join(names[:most]) + (f", ... ({len(names)} in all)" if len(names) > most
                                      else "")


def _read_npz(path, key, need_target):
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "X" not in archive.files:
                raise DataError(f"{path}: no array 'X' (arrays: {archive.files})")
            X = archive["X"]
            y = archive[key] if key in archive.files else None
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path}: not a readable .npz file of arrays ({exc})") from None
    if y is None and need_target:
        raise DataError(f"{path}: no targets array {key!r} (arrays: X and others)")
    return _from_arrays(path, X, y)


def _read_npy(x_path, y_path, rows):
    """Features (memory-mapped and cut to `rows` when given) and targets."""
    arrays = []
    for path in (x_path, y_path):
        if path is None:
            arrays.append(None)
            continue
        try:
            arrays.append(np.load(path, allow_pickle=False,
                                  mmap_mode="r" if rows is not None else None))
        except Exception as exc:
            raise DataError(f"{path}: not a readable .npy array ({exc})") from None
    X, y = arrays
    if rows is not None:
        if X.ndim != 2 or (y is not None and len(y) != len(X)):
            return _from_arrays(x_path, X, y, y_path=y_path)  # its error names the shapes
        start, stop = rows(len(X))
        X, y = X[start:stop], None if y is None else np.asarray(y[start:stop])
    return _from_arrays(x_path, X, y, y_path=y_path)


def _from_arrays(path, X, y, y_path=None):
    X = np.asarray(X)
    if X.ndim != 2 or X.dtype.kind not in "biuf":
        raise DataError(f"{path}: features must be a 2-D array of numbers, got shape "
                        f"{X.shape} of {X.dtype}")
    X = X.astype(np.float64)
    bad = np.argwhere(~np.isfinite(X))
    if len(bad):
        raise DataError(f"{path}: features row {bad[0][0]}, column {bad[0][1]} is "
                        f"{X[tuple(bad[0])]}, not a finite number")
    if y is not None:
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1 or len(y) != len(X):
            raise DataError(f"{y_path or path}: targets must be one per row of the features "
                            f"({len(X)}), got shape {y.shape}")
        if y.dtype.kind not in "biufUS":
            raise DataError(f"{y_path or path}: targets must be numbers or strings, got "
                            f"{y.dtype}")
    names = [f"x{j}" for j in range(X.shape[1])]
    return Table(X, y, names, None)


# A whole-number target is taken as class labels when it has few distinct values, each
# with rows to learn from: 2 values, or at most MAX_CLASSES_GUESSED with at least
# ROWS_PER_CLASS rows a value on average. Measured on the tables bundled with
# scikit-learn and statsmodels (tools/target_tasks.py): every classification table
# (iris, wine, breast_cancer, digits, anes96, spector, modechoice) is taken as one, and
# every whole-number regression table (diabetes: 214 values in 442 rows, randhie 59,
# cancer 102, heart 64, strikes 49, stackloss 14 in 21, longley 16 in 16, committee 20
# in 20, cpunish 7 in 17) as a regression.
MAX_CLASSES_GUESSED = 20
ROWS_PER_CLASS = 3


def choose_task(y):
    """("classification" or "regression", why): what --task auto makes of targets y."""
    y = np.asarray(y)
    numeric = _as_numbers(y)
    if numeric is None:
        return "classification", "the target holds text: its values are class labels"
    if numeric.dtype.kind == "b":
        return "classification", "the target is true/false"
    values = numeric.astype(np.float64)
    if not (np.isfinite(values).all() and np.all(values == np.round(values))):
        return "regression", "the target holds fractional numbers"
    distinct = len(np.unique(values))
    if distinct <= 2 or distinct <= min(MAX_CLASSES_GUESSED, len(values) / ROWS_PER_CLASS):
        return "classification", (f"the target holds {distinct} distinct whole numbers: "
                                  f"taken as class labels")
    return "regression", (f"the target holds {distinct} distinct whole numbers in "
                          f"{len(values)} rows: too many for classes (more than "
                          f"{MAX_CLASSES_GUESSED}, or fewer than {ROWS_PER_CLASS} rows "
                          f"each)")


def _as_numbers(y):
    """y as numbers (strings parsed), or None when some value is not a number."""
    if y.dtype.kind not in "USO":
        return y
    try:
        return y.astype(np.float64)
    except (TypeError, ValueError):
        return None


def _target_cell(bad, lines, path, column):
    """Where row `bad` of the target is, as the readers name a cell: its file, its line
    (or row), its column, each where known."""
    parts = [path] if path is not None else []
    parts.append(f"line {lines[bad]}" if lines is not None else f"row {bad + 1}")
    parts += [f"column {column!r}"] if column is not None else []
    return ", ".join(parts)


def encode_target(y, task="auto", lines=None, path=None, column=None):
    """(task, targets for fit, class names or None).

    auto: choose_task decides. Classes are the sorted distinct labels ("1" and "1.0" are
    one class); the targets become their indices. A target of numbers with a few cells
    that are not (an "NA" in a column of prices) is an error naming the first such cell
    (its file `path`, its line: `lines` holds each row's line in the file, else its row,
    and the target's `column`), not a class of its own.
    """
    if task not in ("auto", "classification", "regression"):
        raise ValueError(f"task must be auto, classification or regression, not {task!r}")
    y = np.asarray(y)
    numeric = _as_numbers(y)
    if numeric is None and task != "classification":
        parses = np.array([_is_number(v) for v in y])
        if task == "regression" or parses.mean() > 0.5:
            bad = int(np.flatnonzero(~parses)[0])
            raise DataError(f"{_target_cell(bad, lines, path, column)}: the target "
                            f"{str(y[bad])[:40]!r} is not a number, in a target of numbers: "
                            f"fill or drop that row (or --task classification to take "
                            f"every value as a class label)")
    if task == "auto":
        task = choose_task(y)[0]
    if task == "regression":
        values = numeric.astype(np.float64)
        if not np.isfinite(values).all():
            bad = int(np.flatnonzero(~np.isfinite(values))[0])
            raise DataError(f"{_target_cell(bad, lines, path, column)}: the target "
                            f"{str(y[bad])[:40] if y.dtype.kind in 'USO' else values[bad]} "
                            f"is not a finite number")
        return "regression", values, None
    if numeric is not None and numeric.dtype.kind != "b":
        values = numeric.astype(np.float64)
        if np.all(np.isfinite(values)) and np.all(values == np.round(values)):
            labels = values.astype(np.int64)  # "1" and "1.0" are one class
        else:
            labels = y.astype(str)
    else:
        labels = y
    classes, indices = np.unique(labels, return_inverse=True)
    if len(classes) < 2:
        raise DataError(f"classification needs at least 2 classes; the target has only "
                        f"{classes.tolist()}")
    return "classification", indices.astype(np.int64), classes.tolist()


def decode_labels(indices, classes):
    """Class names for predicted class indices (the indices when no names were saved)."""
    if classes is None:
        return np.asarray(indices)
    return np.asarray(classes, dtype=object)[np.asarray(indices)]
