"""Generated bindings of the engine protocol; regenerate them with `make proto`."""
