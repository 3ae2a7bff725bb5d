"""HTTP routes of the reward service, one module per concern."""
