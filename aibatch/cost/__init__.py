"""What a run costs: prices, the budget, and the estimate made before a run."""
