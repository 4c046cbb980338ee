"""FASCL model: window features, encoder, soft contrastive loss, trainer, evaluation."""
