"""The prediction log: every answered request (or a sampled share), one row per predicted row, in
Parquet segments that DuckDB, pandas or pyarrow read as they are.

Each worker's ``PredictionLog`` (``writer``) queues requests on the hot path and writes them, off
it, as segments under ``$DOCKYARD_HOME/predictions/<model>/<YYYY-MM-DD>/`` (``layout``): an Arrow
table of the batch (``tables``) as a file linked into place (``storage``), later merged with its
neighbours (``compaction``). Retention's purge and a data subject's erasure remove rows from
written segments (``rewrites``); ``read_predictions`` reads a model's rows in a time window
(``reader``) and ``encode_table`` hands them out as a file (``export``).

With ``prediction_log_url`` set, the monitoring process mirrors the home's segments to its
machine's folder of a bucket (``bucket``: the S3 calls; ``mirror``: what to upload and delete), and
``read_machines`` reads every machine's through a verified cache in the home (``machines``).
"""

from dockyard.monitoring.predlog.compaction import (
    LOCK_NAME,
    ORPHAN_AGE_S,
    REWRITE_LOCK,
    compact_folder,
    compaction_lock,
    merge_segments,
    sweep_orphans,
)
from dockyard.monitoring.predlog.export import EXPORT_LIMIT, FORMATS, MEDIA_TYPES, encode_table
from dockyard.monitoring.predlog.layout import PREDICTIONS, TIME, log_cipher, predictions_folder
from dockyard.monitoring.predlog.reader import read_predictions
from dockyard.monitoring.predlog.rewrites import (
    Purged,
    all_segments,
    exclusive_lock,
    purge_before,
    rewrite_segment,
)
from dockyard.monitoring.predlog.storage import (
    concat,
    read_segment,
    read_settled,
    segments,
    write_segment,
)
from dockyard.monitoring.predlog.tables import INPUT, OUTPUT
from dockyard.monitoring.predlog.writer import PredictionLog, Protect

__all__ = [
    "EXPORT_LIMIT",
    "FORMATS",
    "INPUT",
    "LOCK_NAME",
    "MEDIA_TYPES",
    "ORPHAN_AGE_S",
    "OUTPUT",
    "PREDICTIONS",
    "REWRITE_LOCK",
    "TIME",
    "PredictionLog",
    "Protect",
    "Purged",
    "all_segments",
    "compact_folder",
    "compaction_lock",
    "concat",
    "encode_table",
    "exclusive_lock",
    "log_cipher",
    "merge_segments",
    "predictions_folder",
    "purge_before",
    "read_predictions",
    "read_segment",
    "read_settled",
    "rewrite_segment",
    "segments",
    "sweep_orphans",
    "write_segment",
]
