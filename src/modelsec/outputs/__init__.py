"""Writing a result: ``result.json``, the HTML and Markdown reports (through :mod:`modelsec.report`), the arrays,
the run-store row. The one place that turns a workflow's typed result into files, for the command line and the
Python API alike."""
