"""Training: fine-tuning classifiers (dense or masked, plain or adversarial), resumable."""

from robustprune.train.adversarial import PGD, FreeLB, adversarial_backward
from robustprune.train.finetune import adversarial_finetune, finetune_classifier
from robustprune.train.schedule import TrainingSchedule

__all__ = ["PGD", "FreeLB", "TrainingSchedule", "adversarial_backward", "adversarial_finetune",
           "finetune_classifier"]
