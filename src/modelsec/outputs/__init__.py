"""Writing a result: ``result.json``, the HTML and Markdown reports (through :mod:`modelsec.report`), the arrays,
the run-store row. The one place that turns a workflow's typed result into files, for the command line and the
Python API alike.

- :mod:`~modelsec.outputs.files`: the one mechanism: every file written atomically into a run's folder, the paths
  returned by name;
- :mod:`~modelsec.outputs.audit`: an audit (``result.json``, ``report.html``, ``adversarial.npz``,
  ``exposed_records.csv``, the run-store row); :mod:`~modelsec.outputs.exposed_records`: the CSV;
- :mod:`~modelsec.outputs.compare`: a comparison (every model's audit folder, ``comparison.json/.html/.md``);
- :mod:`~modelsec.outputs.dp_audit`: a one-run privacy audit (``dp_audit.json``, ``dp_audit.html``).

Each ``*_and_write`` function is what a command does: the workflow (:mod:`modelsec.audits`, which computes and
returns a typed outcome and writes no output), then its files.
"""
