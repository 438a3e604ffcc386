"""Build the UCADI federation Grafana dashboard as code (grafana-foundation-sdk).

    .venv/bin/pip install 'grafana-foundation-sdk==1769699379!11.6.0'
    .venv/bin/python deploy/grafana/build_dashboard.py          # rewrites ucadi-federation.json
    .venv/bin/python deploy/grafana/build_dashboard.py --check  # exit 1 if the JSON is stale

Every query names only metrics the services export (tests/test_deploy_dashboard.py checks it):
rounds, participation, traffic and encryption time from the aggregator, crypto and trainer;
per-site validation metrics where sites share them; requests, latency, errors, batching and
model version from the inference services. Histograms are read through _bucket/_sum/_count.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import (
    bargauge,
    dashboard,
    prometheus,
    stat,
    statetimeline,
    timeseries,
)
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef, VariableRefresh

DASHBOARD_JSON = Path(__file__).with_name("ucadi-federation.json")
DASHBOARD_UID = "ucadi-federation"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
FED = 'federation=~"$federation"'
SITE = 'federation=~"$federation", site=~"$site"'
INF = 'instance=~"$inference"'
WINDOW = "$__rate_interval"
# Half-width panels on Grafana's 24-column grid; stats are a quarter wide.
HALF, QUARTER, THIRD = 12, 6, 8


def query(expr: str, legend: str, ref: str = "A") -> prometheus.Dataquery:
    """A PromQL range query against the dashboard's Prometheus data source."""
    return (prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref)
            .datasource(DATASOURCE))


def quantiles(histogram: str, selector: str, by: str, legend: str) -> list[prometheus.Dataquery]:
    """p50 and p95 of a Prometheus histogram over the rate window, grouped by `by`."""
    group = f"le, {by}" if by else "le"
    return [query(f"histogram_quantile({q}, sum by ({group}) "
                  f"(rate({histogram}_bucket{{{selector}}}[{WINDOW}])))",
                  f"{legend} p{int(q * 100)}", ref)
            for q, ref in ((0.5, "A"), (0.95, "B"))]


def series(title: str, description: str, unit: str, targets: list[prometheus.Dataquery],
           width: int = HALF) -> timeseries.Panel:
    """A time-series panel."""
    panel = (timeseries.Panel().title(title).description(description).unit(unit)
             .datasource(DATASOURCE).span(width).height(8).line_width(1).fill_opacity(10))
    for target in targets:
        panel = panel.with_target(target)
    return panel


def single(title: str, description: str, unit: str, target: prometheus.Dataquery,
           width: int = QUARTER) -> stat.Panel:
    """A single-value stat panel."""
    return (stat.Panel().title(title).description(description).unit(unit)
            .datasource(DATASOURCE).span(width).height(4).with_target(target))


def round_panels() -> list:
    """Round number, state, deadline, participation and duration."""
    state = (statetimeline.Panel().title("Round state")
             .description("The aggregator's round state machine (1 = current state).")
             .datasource(DATASOURCE).span(HALF).height(4)
             .with_target(query(f"max by (state) (ucadi_round_state{{{FED}}}) == 1", "{{state}}")))
    return [
        single("Round", "Current round number.", "none",
               query(f"max by (federation) (ucadi_round_number{{{FED}}})", "{{federation}}")),
        single("Participants / expected", "Uploads accepted this round vs active sites.",
               "percentunit",
               query(f"max by (federation) (ucadi_round_participants{{{FED}}}) / max by "
                     f"(federation) (ucadi_round_expected_participants{{{FED}}})",
                     "{{federation}}")),
        state,
        single("Time to deadline", "Seconds until the current round's deadline (negative: late).",
               "s", query(f"max by (federation) (ucadi_round_deadline_timestamp_seconds{{{FED}}})"
                          " - time()", "{{federation}}")),
        series("Participants vs expected", "Accepted uploads and active sites per round.", "none",
               [query(f"max by (federation) (ucadi_round_participants{{{FED}}})",
                      "participants {{federation}}"),
                query(f"max by (federation) (ucadi_round_expected_participants{{{FED}}})",
                      "expected {{federation}}", "B")]),
        series("Round duration", "Announce to seal, per round.", "s",
               quantiles("ucadi_round_duration_seconds", FED, "federation", "{{federation}}")),
    ]


def traffic_panels() -> list:
    """Bytes in and out, encryption, decryption and summation time, rejected uploads."""
    return [
        series("Ciphertext traffic", "Encrypted update uploads and global model downloads "
               "(sites fetch global versions from the sum service, or from the aggregator).",
               "Bps", [query(f"sum by (federation) (rate(ucadi_upload_bytes_total{{{FED}}}"
                             f"[{WINDOW}]))", "in (uploads) {{federation}}"),
                       query(f"sum by (federation) (rate(ucadi_download_bytes_total{{{FED}}}"
                             f"[{WINDOW}]))", "out (aggregator downloads) {{federation}}", "B"),
                       query(f"sum (rate(ucadi_sum_fetched_bytes_total[{WINDOW}]))",
                             "out (sum service fetches)", "C")]),
        series("Rejected uploads by reason", "Uploads refused by validation (layout, round, "
               "digest, ...).", "reqps",
               [query(f"sum by (reason) (rate(ucadi_uploads_rejected_total{{{FED}}}[{WINDOW}]))",
                      "{{reason}}")]),
        series("Encrypt / decrypt time (sites, p95)", "Seconds a site spends encrypting its "
               "update and decrypting the global model.", "s",
               [query("histogram_quantile(0.95, sum by (le) (rate("
                      f"ucadi_trainer_encrypt_seconds_bucket[{WINDOW}])))", "encrypt p95"),
                query("histogram_quantile(0.95, sum by (le) (rate("
                      f"ucadi_trainer_decrypt_seconds_bucket[{WINDOW}])))", "decrypt p95", "B"),
                query("histogram_quantile(0.95, sum by (le) (rate("
                      f"ucadi_trainer_train_seconds_bucket[{WINDOW}])))", "local training p95",
                      "C")], width=THIRD),
        series("Ciphertext sum time", "Seconds the crypto service spends adding a round's "
               "ciphertexts.", "s", quantiles("ucadi_sum_seconds", "", "", "sum"), width=THIRD),
        series("Sum service", "Contributions by outcome and bytes summed.", "short",
               [query(f"sum by (outcome) (rate(ucadi_sum_contributions_total[{WINDOW}]))",
                      "contributions {{outcome}}"),
                query(f"sum (rate(ucadi_sum_bytes_total[{WINDOW}]))", "bytes/s summed", "B")],
               width=THIRD),
        single("Wrapped keys stored", "Per-site wrapped LWE keys held (unreadable) by the key "
               "service.", "none", query("sum (ucadi_wrapped_keys_stored)", "keys")),
        single("Key registrations", "Site public-key registrations since start.", "none",
               query("sum (ucadi_key_registrations_total)", "registrations")),
        single("Sites' completed rounds", "Rounds completed by all trainers scraped here.", "none",
               query("sum (ucadi_trainer_rounds_completed_total)", "rounds")),
        single("Latest round at a site", "Highest round a site's trainer finished.", "none",
               query("max (ucadi_trainer_last_round)", "round")),
    ]


# Per-site panels draw at most this many sites (the furthest behind, the lowest validation
# figures): a federation of 1,000 sites would otherwise draw 1,000 bars or lines per panel
# (issue 25). The per-site series stay in Prometheus for the alert and for queries.
SITE_PANEL_LIMIT = 20


def site_panels() -> list:
    """Per-site participation and the validation metrics sites choose to share: the
    SITE_PANEL_LIMIT sites furthest behind or lowest, and how many sites are behind."""
    rounds_behind = (f"max by (federation) (ucadi_round_number{{{FED}}}) - on (federation) "
                     f"group_right () max by (federation, site) (ucadi_site_last_round{{{SITE}}})")
    behind = (bargauge.Panel().title(f"Rounds behind, the {SITE_PANEL_LIMIT} sites furthest "
                                     "behind")
              .description("Current round minus the last round the site uploaded to; the "
                           f"{SITE_PANEL_LIMIT} largest (pick sites with the Site variable).")
              .datasource(DATASOURCE).span(HALF).height(8).unit("none")
              .with_target(query(f"topk({SITE_PANEL_LIMIT}, {rounds_behind})", "{{site}}")))
    missing = single("Sites 3+ rounds behind", "Sites whose last upload is 3 or more rounds "
                     "old (the UcadiSiteMissingRounds alert's condition).", "none",
                     query(f"count (({rounds_behind}) >= 3) or vector(0)", "sites"),
                     width=HALF)
    validation = [
        series(f"Validation {name}, the {SITE_PANEL_LIMIT} lowest sites",
               f"Site-reported {name} on its own validation split, when the site shares it: "
               f"the {SITE_PANEL_LIMIT} lowest.", "percentunit",
               [query(f"bottomk({SITE_PANEL_LIMIT}, max by (site) "
                      f"(ucadi_site_validation_{metric}{{{SITE}}}))", "{{site}}")],
               width=THIRD)
        for name, metric in (("AUC", "auc"), ("sensitivity", "sensitivity"),
                             ("specificity", "specificity"))]
    return [behind, missing, *validation]


def inference_panels() -> list:
    """Request rate, latency, errors, batching, queue and model version of the sites' servers."""
    return [
        series("Inference requests by RPC and code", "Requests per second by gRPC method and "
               "status code.", "reqps",
               [query(f"sum by (rpc, code) (rate(ucadi_inference_requests_total{{{INF}}}"
                      f"[{WINDOW}]))", "{{rpc}} {{code}}")]),
        series("Inference latency", "Server-side latency per RPC.", "s",
               quantiles("ucadi_inference_latency_seconds", INF, "rpc", "{{rpc}}")),
        series("Inference error ratio", "Share of requests not ending in OK (alert at 5 %).",
               "percentunit",
               [query(f'sum (rate(ucadi_inference_requests_total{{{INF}, code!="OK"}}'
                      f"[{WINDOW}])) / sum (rate(ucadi_inference_requests_total{{{INF}}}"
                      f"[{WINDOW}]))", "errors")], width=THIRD),
        series("Batch size", "Requests per model forward pass (dynamic batching).", "none",
               quantiles("ucadi_inference_batch_size", INF, "", "batch"), width=THIRD),
        series("Queue depth", "Requests waiting for a batch slot.", "none",
               [query(f"max by (instance) (ucadi_inference_queue_depth{{{INF}}})",
                      "{{instance}}")], width=THIRD),
        single("Served model version", "Global model version each inference server loaded.",
               "none", query(f"max by (instance) (ucadi_inference_model_version{{{INF}}})",
                             "{{instance}}"), width=HALF),
    ]


def variables() -> list:
    """Data source, federation, site and inference-server pickers."""
    def label_values(name: str, label: str, metric: str) -> dashboard.QueryVariable:
        return (dashboard.QueryVariable(name).label(label).datasource(DATASOURCE)
                .query(f"label_values({metric}, {name})")
                .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
                .multi(True).include_all(True).all_value(".*"))

    return [dashboard.DatasourceVariable("datasource").label("Prometheus").type("prometheus"),
            label_values("federation", "Federation", "ucadi_round_number"),
            label_values("site", "Site", 'ucadi_site_last_round{federation=~"$federation"}'),
            (dashboard.QueryVariable("inference").label("Inference server")
             .datasource(DATASOURCE).query("label_values(ucadi_inference_requests_total, instance)")
             .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED).multi(True).include_all(True)
             .all_value(".*"))]


def build() -> dict:
    """The dashboard as a Grafana JSON model."""
    board = (dashboard.Dashboard("UCADI federation").uid(DASHBOARD_UID)
             .description("Federated rounds, encrypted traffic, site validation and inference "
                          "of a UCADI federation.")
             .tags(["ucadi", "federated-learning"]).refresh("30s").time("now-6h", "now")
             .timezone("browser").editable())
    for variable in variables():
        board = board.with_variable(variable)
    for title, panels in (("Rounds", round_panels()), ("Traffic and encryption", traffic_panels()),
                          ("Sites", site_panels()), ("Inference", inference_panels())):
        board = board.with_row(dashboard.Row(title))
        for panel in panels:
            board = board.with_panel(panel)
    return json.loads(json.dumps(board.build(), cls=JSONEncoder))


def main(argv: list[str] | None = None) -> int:
    """Write the dashboard JSON, or with --check report whether the committed one is current."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the JSON is stale")
    args = parser.parse_args(argv)
    text = json.dumps(build(), indent=2, sort_keys=True) + "\n"
    if args.check:
        current = DASHBOARD_JSON.read_text() if DASHBOARD_JSON.exists() else ""
        if current != text:
            print(f"{DASHBOARD_JSON} is stale: run {sys.argv[0]}", file=sys.stderr)
            return 1
        return 0
    DASHBOARD_JSON.write_text(text)
    print(f"wrote {DASHBOARD_JSON}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
