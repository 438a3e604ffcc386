"""A site's inference service: Open Inference Protocol (KServe v2) and CT-native diagnosis.

`server.py` holds the thin gRPC servicers and the bootstrap; the domain logic lives beside it:
`model_store.py` (load and hot-reload the published global model), `batching.py` (dynamic
batching), `tensors.py` (protocol tensors <-> numpy), `upload.py` (a streamed study with
limits), `diagnosis.py` (the CT pipeline), `metrics.py`; `client.py` is `ucadi diagnose`.
"""
