"""acme-mv benchmarks: ``python -m benchmarks`` (see the Performance section of README.md).

One entry point starts or takes a PostgreSQL server, builds the sample source
at ``--orders N`` and runs each measurement (one module each) several rounds,
reporting median, min and max, rows and rows/s, and the ratios between
measurements of the same run. Targets are reported, never asserted.
"""
