"""The example ensembles (the demo's digits, and the vision, heavy and text benchmarks) and
`make demo`, which builds, serves and queries the digits ensemble."""
