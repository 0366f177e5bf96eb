"""Machine learning: features as of t from events and monthly rollups (features, rollups), the
feature specs (catalog), training sets, search and training, the served model, scoring with
reasons, the registry, promotion, evaluation and the model report."""
