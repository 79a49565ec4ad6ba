"""The benchmark suite of BENCH.md: batchgate beside Celery, arq, SAQ and procrastinate, and the
machine's limits.

    bench/run [--quick | --tiny] [--systems BG-S,CEL-T,...] [--kinds noop,http] [--reps 5]

`python -m bench.suite --help` lists every option; bench/README.md says what each number means.
"""
