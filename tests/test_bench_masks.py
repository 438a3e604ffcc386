"""The pairwise-mask benchmark's in-memory round (bench/secure_aggregation.py) at a small size:
it runs the production masking, summing, unmasking and checked decryption, so a masked sum that
did not decrypt exactly (the integrity check) or a broken step fails here, not in `make bench`."""

from __future__ import annotations

import re

from bench.secure_aggregation import measure, measure_in_memory


def test_the_masked_round_of_the_benchmark_decrypts_exactly_and_reports_its_ratios(capsys):
    shared, masked, plain, upload, download = measure(3, 1, values=20_000)
    assert masked.site > shared.site > 0 and masked.central > 0 and plain > 0
    assert masked.control_bytes > 0
    assert download < upload, "the sum downloads at fewer bits per value than an upload"
    line = measure_in_memory(3, 0, 20_000, 1)
    assert re.match(r"pairwise masks, 3 sites, 0 dropped, 0\.02 M values: upload \d\.\d\dx "
                    r"float32 .* critical path \d+\.\d\dx", line), line
    assert "3 sites, 0 dropped, 20,000 values:" in capsys.readouterr().out
