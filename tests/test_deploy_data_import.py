"""The site chart's data import Job runs `ucadi ct import` from the export volume into exactly
the claim the trainer reads, next to the trainer (ReadWriteOnce), with arguments the real
command line accepts; it refuses to render without an export or a data claim."""

from __future__ import annotations

from typing import Any

import pytest
from test_deploy_charts import NAMESPACE, RELEASE, SITE, SITE_CASES, find, helm, render, with_site

from ucadi.cli import build_parser


def volume(pod: dict[str, Any], name: str) -> dict[str, Any]:
    return next(v for v in pod["volumes"] if v["name"] == name)


def test_import_job_writes_the_trainers_data_claim_from_the_export() -> None:
    manifests, _ = render(SITE, SITE_CASES["data-import"])
    job = find(manifests, "Job", "-data-import-r1")
    pod = job["spec"]["template"]["spec"]
    trainer = find(manifests, "Deployment", "-trainer")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    args = build_parser("ct").parse_args(container["args"])
    assert (args.func.__name__, args.site) == ("run_import", "main-campus")
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert str(args.out) == "/data" and "readOnly" not in mounts["/data"]
    assert mounts["/import"]["readOnly"] is True and str(args.export) == "/import"
    assert volume(pod, "export")["persistentVolumeClaim"]["claimName"] == "pacs-export"
    assert volume(pod, "data")["persistentVolumeClaim"]["claimName"] == \
        volume(trainer, "data")["persistentVolumeClaim"]["claimName"]
    trainer_labels = find(manifests, "Deployment", "-trainer")["spec"]["template"]["metadata"][
        "labels"]
    term = pod["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
    assert term["labelSelector"]["matchLabels"].items() <= trainer_labels.items()
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


@pytest.mark.parametrize(("extra", "message"), [
    ({"dataImport": {"enabled": True}}, "dataImport.source must name the volume"),
    ({"dataImport": {"enabled": True, "source": {"nfs": {"server": "pacs", "path": "/x"}}},
      "trainer": {"persistence": {"enabled": False}}}, "dataImport needs a data claim"),
], ids=["no-source", "no-claim"])
def test_import_job_refuses_to_render_without_an_export_or_a_claim(extra: dict[str, Any],
                                                                    message: str) -> None:
    with helm.Chart.load(SITE) as loaded, pytest.raises(Exception, match=message):
        loaded.render(with_site(extra), name=RELEASE, namespace=NAMESPACE)
