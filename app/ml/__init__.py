"""Machine learning: training sets, training, scoring with reasons, the model registry."""
