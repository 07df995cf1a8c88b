"""Pages a person opens: ``report.html`` in each run folder and ``index.html`` in each sweep folder.

Self-contained for ``file://`` and offline: the mesh is embedded in the page (browsers refuse
``fetch`` from ``file://``), images and the video are relative links into the run folder, and the
3D view is Google's ``<model-viewer>``, vendored (``vendor/``, with its licences) and copied into
``report_files/`` beside the page. ``tensorboard`` mirrors metrics.jsonl for ``logger=tensorboard``.
"""

from .page import ReportError
from .run_page import write_run_report

__all__ = ["ReportError", "write_run_report"]
