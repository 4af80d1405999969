"""`make bench`: performance figures, printed, never asserted. Each bench_*.py module has run()."""
