"""Bulk importer for the Instasent Ingest API.

Every row of a CSV/Parquet/NDJSON export ends up either accepted by the API or in a
rejects file that says why and can be re-run: never lost, never duplicated.
"""

from importer.exceptions import ImporterError

__version__ = "0.1.0"

__all__ = ["ImporterError", "__version__"]
