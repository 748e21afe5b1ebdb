"""Reading the spreadsheets datasets ship with (IXI.xls, SALD's sheet, the IDA collection CSV,
ADNIMERGE, DXSUM) the same way: every cell as text, so IDs like 031274 keep their zeros and
no value is silently turned into a float."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from magicflow.errors import InputError

#: how a missing value is spelled in every table this project reads or writes (BIDS's "n/a")
MISSING = "n/a"

READERS = {".csv": "csv", ".tsv": "tsv", ".xls": "excel", ".xlsx": "excel"}


def read_table(path: str | Path, what: str) -> pd.DataFrame:
    """A CSV, TSV, XLS or XLSX table as text with stripped column names; ``what`` names the
    table in errors (e.g. 'IXI demographics')."""
    path = Path(path)
    kind = READERS.get(path.suffix.lower())
    if kind is None:
        raise InputError(f"{what} {str(path)!r}: expected a .csv, .tsv, .xls or .xlsx file")
    if not path.is_file():
        raise InputError(f"{what} {str(path)!r} does not exist")
    try:
        if kind == "excel":
            table = pd.read_excel(path, dtype=str, keep_default_na=False, engine="calamine")  # reads .xls and .xlsx
        else:
            table = pd.read_csv(path, sep="\t" if kind == "tsv" else ",", dtype=str, keep_default_na=False)
    except Exception as error:  # pandas, xlrd and openpyxl raise many types for a broken file
        raise InputError(f"{what} {str(path)!r} cannot be read: {error}") from None
    table.columns = [str(c).strip() for c in table.columns]
    return table.apply(lambda column: column.str.strip())


def column(table: pd.DataFrame, name: str, path: str | Path, what: str) -> str:
    """The column called ``name``, or the only one starting with it (IXI writes
    'SEX_ID (1=m, 2=f)'); missing is an error naming the columns there are."""
    if name in table.columns:
        return name
    matches = [c for c in table.columns if c.upper().startswith(name.upper())]
    if len(matches) == 1:
        return matches[0]
    raise InputError(f"{what} {str(path)!r}: no column {name!r}; columns are {list(table.columns)}")


def relabel(value: str, labels: dict[str, str]) -> str:
    """A coded value through a config mapping (e.g. sex 1 -> M); unmapped values pass as they are.
    Excel turns codes into floats ('1.0'), so those match their integer key too."""
    if value in labels:
        return labels[value]
    if value.endswith(".0") and value[:-2] in labels:
        return labels[value[:-2]]
    return value
