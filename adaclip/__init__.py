"""AdaCLIP video retrieval: frame selection, aggregation and query scoring (pure PyTorch, no Ray)."""
