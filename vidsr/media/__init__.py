"""Media stages: probing, decoding, batching, encoding and the streaming pipeline."""
