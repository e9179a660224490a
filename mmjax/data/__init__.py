"""Data layer: sources -> Material -> featurisers -> store -> pipeline -> Batch."""
