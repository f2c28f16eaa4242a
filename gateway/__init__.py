"""The scaleserve gateway: an OpenAI-compatible HTTP front end over pooled gRPC engine replicas."""
