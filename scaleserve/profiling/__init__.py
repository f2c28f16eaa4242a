"""Producing performance profiles (docs/profiles.md): `scaleserve profile` measures one with a
load sweep against a running OpenAI endpoint, `scaleserve profile --estimate` estimates one
offline with NVIDIA's aiconfigurator, and `scaleserve profile --layouts` reads one back as the
best layout of a GPU budget at each load."""
