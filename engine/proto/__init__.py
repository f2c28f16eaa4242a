"""Generated bindings of the engine protocol (scaleserve.engine.v1); regenerate with `make proto`."""
