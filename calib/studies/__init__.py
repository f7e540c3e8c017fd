"""Named studies that go beyond one runner job: each is a function from a config to tables and figures, runnable as
`python -m calib.studies.<name> ...` (see experiments/<name>/README.md).

- scaling: confidence quality against compute, sweeping samples K and pause-and-revise passes R.
- temperature: decoding against post-hoc temperature (accuracy, ECE, token Full-ECE per T), fitted calibrators.
"""
