"""The LoRAT tracking service: gRPC API, cross-stream batching, track state in Redis, metrics."""
