"""``exposed_records.csv``: the members the strongest membership attack singles out (``PrivacyResult.exposed_records``,
:mod:`modelsec.audits.exposure`), one row each, for a user to look them up in the members split.

>>> from modelsec.results.audit import ExposedRecord
>>> exposed_records_csv([ExposedRecord(1, 42, 3, "dress", 2.5, "lira"), ExposedRecord(2, 7, 0, None, 0.1, "lira")])
'rank,member_index,label,class_name,score,attack\\r\\n1,42,3,dress,2.5,lira\\r\\n2,7,0,,0.1,lira\\r\\n'
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

from modelsec.outputs.files import write_atomically
from modelsec.results.audit import ExposedRecord

CSV_COLUMNS = ("rank", "member_index", "label", "class_name", "score", "attack")


def exposed_records_csv(records: Sequence[ExposedRecord]) -> str:
    """``records`` as CSV with the header :data:`CSV_COLUMNS` (an empty ``class_name`` is none; scores at full
    precision; ``\\r\\n`` line ends, as the ``csv`` module writes them)."""
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(CSV_COLUMNS)
    for r in records:
        writer.writerow([r.rank, r.member_index, r.label, r.class_name or "", repr(r.score), r.attack])
    return text.getvalue()


def write_exposed_csv(path: str | Path, records: Sequence[ExposedRecord]) -> Path:
    """Write :func:`exposed_records_csv` of ``records`` to ``path`` (UTF-8, atomically) and return the path."""
    data = exposed_records_csv(records).encode("utf-8")
    return write_atomically(path, lambda f: f.write(data))
