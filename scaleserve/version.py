"""scaleserve: LLM endpoints on Kubernetes, reshaped (replicas x tensor-parallel) from live load."""

__version__ = "0.1.0"
