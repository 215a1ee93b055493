"""Reference data as CSV, as users upload it: a header ``x0,x1,…`` and one line per row."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np


def csv_bytes(rows: np.ndarray) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([f"x{i}" for i in range(rows.shape[1])])
    writer.writerows(rows.tolist())
    return buffer.getvalue().encode()


def write_csv(path: Path, rows: np.ndarray) -> Path:
    path.write_bytes(csv_bytes(rows))
    return path
