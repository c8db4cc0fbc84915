"""Training: fine-tuning classifiers (dense or masked) and adversarial training."""
