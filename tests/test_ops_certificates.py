"""Certificates over time: a renewed certificate reaches a running server's new connections
when Kubernetes swaps the mounted Secret's files, its expiry is a metric, and a process knows
its memory limit (for the memory alerts). Real TLS on 127.0.0.1."""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import ssl
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ucadi.ops.memory import memory_limit_bytes
from ucadi.ops.pki import create_ca, issue_certificate
from ucadi.ops.serving import serve
from ucadi.ops.tls import TLSFiles, secure_channel

FILES = ("ca.crt", "tls.crt", "tls.key")


def mount_secret(volume: Path, kit: Path, generation: int) -> None:
    """Lay `kit` out as the kubelet does a Secret volume: files link into ..data, which links
    to a timestamped folder; an update swaps ..data atomically."""
    folder = volume / f"..gen{generation}"
    shutil.copytree(kit, folder)
    link = volume / "..data_tmp"
    link.symlink_to(folder.name)
    os.replace(link, volume / "..data")
    for name in FILES:
        if not (volume / name).is_symlink():
            (volume / name).symlink_to(f"..data/{name}")


def presented_certificate(port: int, client: TLSFiles) -> x509.Certificate:
    """The certificate the server presents in a fresh TLS handshake."""
    context = ssl.create_default_context(cafile=str(client.ca))
    context.load_cert_chain(str(client.cert), str(client.key))
    context.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as tls:
        return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))


def leaf_expiry_metric(metrics_port: int) -> float:
    """ucadi_tls_cert_expiry_timestamp_seconds{certificate="leaf"} as the server exports it."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    found = re.search(r'^ucadi_tls_cert_expiry_timestamp_seconds\{certificate="leaf"\} (\S+)$',
                      text, re.MULTILINE)
    assert found, "the server exports no leaf certificate expiry"
    return float(found.group(1))


def healthy(port: int, client: TLSFiles) -> bool:
    """A health check over a new mutual-TLS channel succeeds."""
    with secure_channel(f"localhost:{port}", client) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                          timeout=10)
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def test_a_renewed_certificate_is_served_without_a_restart_and_its_expiry_exported(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    create_ca(tmp_path / "ca")
    client = issue_certificate(tmp_path / "ca", tmp_path / "operator", "operator", "operator")
    issue_certificate(tmp_path / "ca", tmp_path / "kit1", "crypto", "service")
    issue_certificate(tmp_path / "ca", tmp_path / "kit2", "crypto", "service")
    volume = tmp_path / "tls"
    volume.mkdir()
    mount_secret(volume, tmp_path / "kit1", 1)
    running = serve(lambda server: None, service_names=[], tls=TLSFiles.from_dir(volume))
    try:
        first = presented_certificate(running.port, client)
        assert first.serial_number == x509.load_pem_x509_certificate(
            (tmp_path / "kit1" / "tls.crt").read_bytes()).serial_number
        assert leaf_expiry_metric(running.metrics_port) == first.not_valid_after_utc.timestamp()

        # A half-made update (the new certificate with the old key) is not served.
        broken = tmp_path / "broken"
        shutil.copytree(tmp_path / "kit2", broken)
        shutil.copy(tmp_path / "kit1" / "tls.key", broken / "tls.key")
        with caplog.at_level(logging.WARNING):
            mount_secret(volume, broken, 2)
            assert presented_certificate(running.port, client).serial_number == \
                first.serial_number
        assert "cannot be used yet" in caplog.text and "is not the key of" in caplog.text

        mount_secret(volume, tmp_path / "kit2", 3)
        renewed = presented_certificate(running.port, client)
        assert renewed.serial_number == x509.load_pem_x509_certificate(
            (tmp_path / "kit2" / "tls.crt").read_bytes()).serial_number
        assert healthy(running.port, client)
        assert leaf_expiry_metric(running.metrics_port) == \
            renewed.not_valid_after_utc.timestamp()
    finally:
        running.stop(0)


def test_memory_limit_is_the_cgroup_limit_or_the_machines_memory(tmp_path: Path) -> None:
    machine = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    v2 = tmp_path / "memory.max"
    v2.write_text("max\n")
    assert memory_limit_bytes((v2,)) == machine
    v2.write_text(f"{4 << 30}\n")
    assert memory_limit_bytes((v2, tmp_path / "v1")) == min(machine, 4 << 30)
    v1 = tmp_path / "memory.limit_in_bytes"
    v1.write_text("9223372036854771712\n")  # cgroup v1 without a limit
    assert memory_limit_bytes((tmp_path / "absent", v1)) == machine
