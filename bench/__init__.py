"""Benchmarks for `make bench`: each module measures one issue's targets against its baseline."""
