"""A test-controlled site: joins with a real certificate and key, sends exactly what a test
wants (valid or not) instead of training. Used where a test needs a site that is expected in a
round but uploads only when the test says so."""

from __future__ import annotations

import hashlib
from pathlib import Path

from services.trainer.cipher import SiteCipher
from ucadi.demo.federation import FederationPlan, LocalFederation
from ucadi.learn.server_opt import announced_optimization
from ucadi.lwe.keywrap import generate_site_key_pair
from ucadi.model.layout import ParameterLayout, initial_model
from ucadi.ops.tls import secure_channel
from ucadi.v1 import common_pb2, federation_pb2, federation_pb2_grpc
from ucadi.wire.crypto_client import KeyClient


def central_side(root: Path, manifest: Path, sites: list[str]) -> LocalFederation:
    """A federation of `sites` (2 rounds, min_sites 2, a 2-epoch recipe, the shared-key mode:
    probes upload without the masking phases) with its PKI and key made and its crypto service
    and aggregator running; no trainer yet."""
    federation = LocalFederation(FederationPlan(
        root=root, manifest=manifest, sites=sites, rounds=2, min_sites=2,
        recipe={"total_epochs": 2, "warmup_epochs": 1}, pairwise_masks=False))
    federation.provision()
    federation.create_key()
    federation.start_crypto()
    federation.start_aggregator()
    return federation


class ProbeSite:
    """A site whose uploads the test makes by hand."""

    def __init__(self, federation: LocalFederation, name: str, train_cases: int = 8) -> None:
        self.federation = federation
        self.name = name
        self.train_cases = train_cases
        keys_channel = secure_channel(federation.processes["crypto"].target,
                                      federation.tls(name))
        public_pem = generate_site_key_pair().public_pem()
        KeyClient(keys_channel).register_site_key(public_pem)
        keys_channel.close()
        federation.pin_site(name, public_pem)
        federation.approve_sites([name])
        self.channel = secure_channel(federation.processes["aggregator"].target,
                                      federation.tls(name))
        self.stub = federation_pb2_grpc.FederationServiceStub(self.channel)
        self.joined = self.stub.Join(federation_pb2.JoinRequest(train_cases=train_cases),
                                     timeout=30)
        spec = self.joined.model
        model = initial_model(spec.arch, spec.preset, 2, spec.init_seed)
        self.vector = ParameterLayout.of(model.state_dict()).flatten(model.state_dict())
        self.cipher = SiteCipher(federation.secret)

    def close(self) -> None:
        """Close the channel."""
        self.channel.close()

    def header(self, **fields: object) -> federation_pb2.UpdateHeader:
        """An upload header for round 1 from version 0 unless `fields` say otherwise."""
        secret = self.federation.secret
        base: dict[str, object] = dict(
            round=1, base_version=0, parameter_set=secret.params.name, key_id=secret.key_id_hex,
            layout_hash=self.joined.model.layout_hash, num_samples=self.train_cases,
            local_epochs=1,
            optimizer_digest=announced_optimization(self.joined.model.optimizer_json).digest)
        base.update(fields)
        return federation_pb2.UpdateHeader(**base)

    def send(self, header: federation_pb2.UpdateHeader, payload: bytes
             ) -> federation_pb2.UploadReceipt:
        """Upload `payload` in one chunk under `header` (size and digest filled if unset)."""
        if not header.total_size:
            header.total_size = len(payload)
            header.sha256 = hashlib.sha256(payload).hexdigest()

        def messages():
            yield federation_pb2.UploadUpdateRequest(header=header)
            yield federation_pb2.UploadUpdateRequest(chunk=common_pb2.Chunk(
                offset=0, data=payload, total_size=len(payload),
                sha256=hashlib.sha256(payload).hexdigest()))
        return self.stub.UploadUpdate(messages(), timeout=60)

    def record(self, header: federation_pb2.UpdateHeader, payload: bytes
               ) -> federation_pb2.UploadReceipt:
        """Record `payload` as sent to the sum service (header.contributed, no chunks)."""
        header.total_size = len(payload)
        header.sha256 = hashlib.sha256(payload).hexdigest()
        return self.stub.UploadUpdate(iter([federation_pb2.UploadUpdateRequest(header=header)]),
                                      timeout=60)

    def encrypted_update(self, round_number: int, path: Path) -> bytes:
        """A valid ciphertext of the initial model, weighted by this site's cases."""
        self.cipher.encrypt_to_file(self.vector, weight=self.train_cases,
                                    round_number=round_number,
                                    layout_hash=self.joined.model.layout_hash, path=path,
                                    site=self.name)
        return path.read_bytes()
