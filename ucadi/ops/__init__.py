"""Operations plumbing shared by every service: PKI/TLS, gRPC serving, metrics, tracing, config."""
