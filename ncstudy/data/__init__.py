"""Data: long-tailed subsets (longtail), sources (sources), tensor batches (loader), assembly (build)."""
