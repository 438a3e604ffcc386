"""The crypto service: key service (wrapped keys only) and ciphertext summation (gRPC)."""
