"""What tests and benchmarks share: free ports, a TCP proxy that can be cut, `tanp-serve` as a
live process. Benchmarks run as `python bench/x.py` put the repository root on sys.path first."""
