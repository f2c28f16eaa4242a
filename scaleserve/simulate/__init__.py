"""`scaleserve simulate`: LLMEndpoints on a simulated GPU cluster, over simulated time.

Engines are modelled from performance profiles (scaleserve/profiles.py); the layout policy,
the transition planner and the gateway's routing policies are the product's own code; only
I/O is replaced by events. docs/simulator.md describes what is modelled and what is not.
"""
