"""Reading a CSV file with pyarrow's CSV reader, into the Table that fastnn.tabular's record
loop makes of the same file, or None (having changed nothing) for a file this reader does
not take exactly; the record loop then reads it and gives the errors.

Two passes, the first that takes the file wins:
- numbers: every feature column parsed by pyarrow as numbers, none missing or infinite
  (the features straight into a float64 matrix);
- cells: every column read as text, block by block; a feature column whose cells all
  cast to float64 is numeric (NaN where missing), any other is decided as the record loop
  decides, from its distinct cells: numbers and missing cells (fastnn.preprocessing's
  MISSING) make a numeric column, one text cell a categorical one, whose cells become
  category keys (a number's repr, or the stripped text; None where missing). A column
  numeric in one block and text in a later one ends categorical throughout.

Not taken: gzip, blank lines, fields spanning lines, rows of the wrong length, a missing
target, an infinite number, a decimal comma in a "." file, and cells whose meaning the
record loop takes from their position (a NaN written other than as MISSING's). Each row's
line is then the one after the row before it (a header line, then one line a row).
"""
import csv
import math

import numpy as np

from .preprocessing import MISSING, category_key, is_missing

MAX_LINE_CHARS = 1 << 24  # a CSV line longer than this is refused as it is read
_BLOCK_BYTES = 1 << 22


class _NotTaken(Exception):
    """This reader does not take the file exactly: the record loop reads it."""


def read_csv(path, target, features, need_target, sep, decimal, columns_of, table_of):
    """The Table of `path` (see the module docstring), or None. columns_of(path, header,
    target, features, need_target) names the feature and target columns (the record
    loop's rule); table_of(X, y, feature_names, target_name, lines, columns) makes the
    Table."""
    if path.lower().endswith(".gz"):
        return None
    try:
        import pyarrow
    except ImportError:
        return None
    try:
        header, delimiter = _header(path, sep)
        if len(header) < 2 or len(set(header)) != len(header):
            return None  # (one column: a blank line would be a row; duplicates: errors)
        feature_names, target_name = columns_of(path, header, target, features,
                                                need_target)
        where = {name: i for i, name in enumerate(header)}
        read = _Reader(path, header, delimiter, where, feature_names, target_name,
                       need_target)
        found = None
        if decimal == ".":
            try:
                found = read.numbers()
            except pyarrow.ArrowInvalid:  # a later block that is not all numbers
                found = None
        X, y, columns = found if found is not None else read.cells(decimal)
    except Exception:  # whatever pyarrow refuses, the record loop reads or explains
        return None
    n = len(X) if X is not None else len(next(iter(columns.values())))
    if not n or not _one_line_a_row(path, n):
        return None
    return table_of(X, y, feature_names, target_name,
                    np.arange(2, n + 2, dtype=np.int64), columns)


def _header(path, sep):
    """(the header's stripped column names, the separator)."""
    from .tabular import _separator
    with open(path, encoding="utf-8-sig", newline="") as f:
        first = f.readline(MAX_LINE_CHARS + 1)
    if len(first) > MAX_LINE_CHARS:
        raise _NotTaken()
    delimiter = sep or _separator(first)
    header = next(csv.reader([first], delimiter=delimiter), None)
    if not header:
        raise _NotTaken()
    return [name.strip() for name in header], delimiter


def _one_line_a_row(path, n_rows):
    """Whether the file has a header line and one line a row (no field spans lines, so
    row i is on line i + 2)."""
    lines, last = 0, b"\n"
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    return lines + (last != b"\n") == n_rows + 1


class _Reader:
    """One file's two passes."""

    def __init__(self, path, header, delimiter, where, feature_names, target_name,
                 need_target):
        self.path, self.header, self.delimiter = path, header, delimiter
        self.where, self.features, self.target = where, feature_names, target_name
        self.need_target = need_target
        self.names = [f"c{i}" for i in range(len(header))]  # (stripped names are matched)

    def _batches(self, types):
        import pyarrow as pa
        from pyarrow import csv as pacsv
        text = {self.names[i]: pa.string() for i in types}
        return pacsv.open_csv(
            self.path,
            read_options=pacsv.ReadOptions(column_names=self.names, skip_rows=1,
                                           block_size=_BLOCK_BYTES),
            parse_options=pacsv.ParseOptions(delimiter=self.delimiter,
                                             ignore_empty_lines=False),
            convert_options=pacsv.ConvertOptions(
                column_types=text, strings_can_be_null=False,
                quoted_strings_can_be_null=False))

    def _targets(self, batch):
        """The batch's targets as stripped text (a missing one: not taken)."""
        import pyarrow.compute as pc
        if self.target is None:
            return None
        column = pc.utf8_trim_whitespace(batch.column(self.where[self.target]))
        if self.need_target and pc.any(pc.equal(pc.utf8_length(column), 0)).as_py():
            raise _NotTaken()
        return column.to_numpy(zero_copy_only=False).astype(str)

    def numbers(self):
        """(X, y, None) of a file whose feature columns pyarrow parses as finite numbers
        with none missing; None for any other file (stopping at its first such block)."""
        import pyarrow as pa
        types = [] if self.target is None else [self.where[self.target]]
        parts, targets = [], []
        for batch in self._batches(types):
            columns = [batch.column(self.where[name]) for name in self.features]
            if any(c.null_count or not (pa.types.is_floating(c.type)
                                        or pa.types.is_integer(c.type)) for c in columns):
                return None
            X = np.empty((batch.num_rows, len(self.features)))
            for k, column in enumerate(columns):
                X[:, k] = column.to_numpy()
            if not np.isfinite(X).all():
                return None
            parts.append(X)
            targets.append(self._targets(batch))
        X = np.concatenate(parts) if parts else np.empty((0, len(self.features)))
        return X, self._joined_targets(targets), None

    def cells(self, decimal):
        """(X or None, y, columns or None) of any file whose cells this reader takes."""
        from .tabular import concat_columns
        every = range(len(self.header))
        parts, targets = [], []
        for batch in self._batches(every):
            parts.append({name: _column(batch.column(self.where[name]), decimal)
                          for name in self.features})
            targets.append(self._targets(batch))
        if not parts:
            raise _NotTaken()
        columns = concat_columns(parts)
        y = self._joined_targets(targets)
        if all(isinstance(c, np.ndarray) and not np.isnan(c).any()
               for c in columns.values()):
            return np.column_stack([columns[name] for name in self.features]), y, None
        return None, y, columns

    def _joined_targets(self, targets):
        return None if self.target is None else np.concatenate(targets)


_MISSING_CELLS = sorted(MISSING)


def _column(cells, decimal):
    """One block of a text column: a float64 array (NaN where missing) when its cells are
    numbers or missing, else a list of category keys (None where missing)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    trimmed = pc.utf8_trim_whitespace(cells)
    missing = pc.is_in(trimmed, value_set=pa.array(_MISSING_CELLS))
    if decimal == ",":
        trimmed = pc.replace_substring(trimmed, ",", ".")
    try:
        values = pc.cast(pc.if_else(missing, pa.scalar(None, pa.string()), trimmed),
                         pa.float64()).to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid:
        return _decided_by_values(cells, decimal)
    if np.isnan(values).sum() != pc.sum(missing).as_py() or np.isinf(values).any():
        raise _NotTaken()  # a NaN the cells spell otherwise, or an infinite number
    return values


def _decided_by_values(cells, decimal):
    """A column pyarrow's cast refused, decided as the record loop decides each cell, once
    per distinct cell."""
    import pyarrow.compute as pc
    encoded = pc.dictionary_encode(cells)
    values = encoded.dictionary.to_pylist()
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    numbers, text = np.empty(len(values)), False
    for i, value in enumerate(values):
        numbers[i] = _cell_number(value, decimal)
        text = text or math.isinf(numbers[i])
    if not text:
        return numbers[codes]
    keys = [None if is_missing(v) else category_key(v, decimal) for v in values]
    return [keys[c] for c in codes]


def _cell_number(value, decimal):
    """A cell as the record loop reads it: its number, NaN when missing, inf when it is
    text; a cell the record loop would refuse, or read by its position, is not taken."""
    try:
        number = float(value if decimal == "." else value.replace(",", "."))
    except ValueError:
        if is_missing(value):
            return math.nan
        if decimal == "." and "," in value:
            raise _NotTaken() from None  # (perhaps a decimal comma: the loop's error)
        return math.inf
    if math.isnan(number) and is_missing(value):
        return number
    if not math.isfinite(number):
        raise _NotTaken()
    return number
