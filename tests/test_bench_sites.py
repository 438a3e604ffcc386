"""bench.sites, the load generator of issue 25: a real federation (crypto service, aggregator,
site processes over mutual TLS) of a few simulated sites, each checking the exact FedAvg."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench import sites


def test_three_sites_in_two_processes_each_decrypt_the_exact_fedavg(tmp_path: Path):
    result = sites.run_point(3, "small", processes=2, concurrency=2, root=tmp_path / "fed")
    assert result["sites"] == 3 and result["exact_fedavg_sites"] == 3
    assert result["model"] == "densenet3d/cpu-small"
    assert 0 < result["last_upload_start_to_seal_s"] <= result["open_to_seal_s"]
    for name in ("aggregator", "crypto"):
        central = result["central"][name]
        assert central["peak_rss_mb"] > 0 and central["cpu_s_round"] >= 0
        assert central["files"] >= 1 and central["sqlite_rows"] >= 3
    assert result["rss_timeline"] and result["status_reply_bytes"] > 0
    # A site's status view: the roster once, then site sets of a few bytes.
    assert 0 < result["site_status_reply_bytes"] < result["site_status_first_reply_bytes"]
    sites.plot([result, result], tmp_path / "scale.png")
    assert (tmp_path / "scale.png").stat().st_size > 10_000


def test_two_sum_replicas_each_hold_a_block_range_and_the_sites_decrypt_the_exact_fedavg(
        tmp_path: Path):
    result = sites.run_point(3, "small", processes=1, concurrency=3, root=tmp_path / "fed",
                             replicas=2)
    assert result["replicas"] == 2 and result["exact_fedavg_sites"] == 3
    assert set(result["central"]) == {"aggregator", "crypto", "crypto-2"}
    assert result["central"]["crypto-2"]["files"] >= 1
    single = {**result, "replicas": 1}
    text = sites.report([single, result])
    assert "Sharded sum replicas" in text and "| 3 | 2 |" in text


def test_the_expected_fedavg_depends_on_every_site():
    template, delta = sites.grid_vectors(1000)
    everyone = sites.expected_fedavg([0, 1, 2, 3], template, delta)
    assert not np.array_equal(everyone, sites.expected_fedavg([0, 1, 2], template, delta))
    assert not np.array_equal(everyone, sites.expected_fedavg([0, 1, 2, 4], template, delta))
    # The updates are on the codec's grid, so the FedAvg is exact, not approximately right.
    weights = [sites.site_weight(k) for k in range(4)]
    updates = [sites.site_update(k, template, delta).astype(np.float64) for k in range(4)]
    assert np.array_equal(everyone, (np.average(updates, axis=0, weights=weights)
                                     ).astype(np.float32))


def test_bad_arguments_say_what_is_accepted():
    with pytest.raises(SystemExit, match="0.73M"):
        sites.resolve_values("12")
    with pytest.raises(SystemExit, match="at least 2 sites"):
        sites.run_point(1, "small")
    with pytest.raises(SystemExit, match="at least 1"):
        sites.run_point(3, "small", processes=0)
    with pytest.raises(SystemExit, match="--replicas 0: at least 1 sum service"):
        sites.run_point(3, "small", replicas=0)


def test_verdicts_compare_the_largest_run_with_the_smallest():
    def run(count: int, seal: float, memory: float, cpu: float) -> dict:
        return {"sites": count, "last_upload_start_to_seal_s": seal,
                "central_cpu_s_per_site": cpu, "exact_fedavg_sites": count,
                "central": {"aggregator": {"peak_rss_mb": memory},
                            "crypto": {"peak_rss_mb": memory}}}
    lines = sites.verdicts([run(10, 1, 100, 0.05), run(1000, 30, 150, 0.06)])
    assert all("NOT met" not in line for line in lines), lines
    lines = sites.verdicts([run(10, 1, 100, 0.05), run(1000, 90, 250, 0.1)])
    assert sum("NOT met" in line for line in lines) == 3, lines
