"""Daily bars: the price panel, importers, cleaning and the synthetic market."""
