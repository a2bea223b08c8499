"""Everything that turns a prompt into tokens: models, ONNX Runtime sessions, KV cache, decoding."""
