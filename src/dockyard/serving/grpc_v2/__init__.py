"""The Open Inference Protocol's gRPC definitions: the ``.proto`` and protoc's modules of it."""
