"""Python SDK for the LoRAT tracking service (needs only grpcio and protobuf)."""
