"""Where events and the catalog come from: landing files, a synthetic shop, MovieLens."""
