"""The EAGLE-3-style draft head: model, pruned vocabulary, artifact format and offline training."""
