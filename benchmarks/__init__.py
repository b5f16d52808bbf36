"""ablate's benchmark suite: framework overhead, training optimisations, generation, data loading, sweep cost."""
