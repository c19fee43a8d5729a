"""Run directories: the contract between recording and analysis, and the floor everything stands on.

* `schema`: every table's columns and types (`TABLES`), checked on write (`conform`) and on open
  (`check_table`);
* `meta`: meta.json as a typed `RunMeta`, with `Status` and `Mode`;
* `writer`: `RunWriter`, which writes a run directory incrementally and survives a full disk;
* `reader`: `Run`, the one reader;
* `output`: `output_file`, through which every file plugtrace writes for a user goes.

The format is documented in docs/run-format.md.
"""

from .meta import PARTIAL_STATUSES, SCHEMA_NAME, SCHEMA_VERSION, Mode, RunMeta, Status, read_meta
from .output import WriteError
from .reader import MissingTableError, Run, WindowError, check_window, read_batches, read_table, table_names
from .schema import LABEL, TABLES, check_table, conform, schema_of
from .writer import RunWriter, parquet_writer

__all__ = [
    "parquet_writer",
    "Run",
    "RunMeta",
    "RunWriter",
    "Status",
    "Mode",
    "PARTIAL_STATUSES",
    "SCHEMA_NAME",
    "SCHEMA_VERSION",
    "MissingTableError",
    "WindowError",
    "WriteError",
    "check_window",
    "read_meta",
    "read_table",
    "read_batches",
    "table_names",
    "LABEL",
    "TABLES",
    "schema_of",
    "conform",
    "check_table",
]
