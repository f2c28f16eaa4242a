"""Developer tools: a local Kubernetes control plane with fake GPU nodes, and the local stack."""
