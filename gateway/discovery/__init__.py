"""Replica discovery: a static list, or a Kubernetes EndpointSlice watch; both feed the pool."""
