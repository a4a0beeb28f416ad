"""Map sheets at scale: many before/after pairs, one merged change layer, a resumable run.

See ``../shared/docs/sheets.md`` for the design. :mod:`.index` reads the sheet list,
:mod:`.execute` runs one job per sheet in-process or on a Dask cluster.
"""
