"""TrainingSchedule: one declaration and one check of every training phase's settings."""

import pytest

from robustprune.pruners.robust_tickets import MASK_SCHEDULE
from robustprune.train.finetune import ADVERSARIAL_SCHEDULE
from robustprune.train.schedule import TrainingSchedule


@pytest.mark.parametrize("field,value,message", [
    ("epochs", 0, "epochs must be > 0"),
    ("epochs", float("nan"), "epochs must be a finite number"),
    ("lr", -1e-5, "lr must be > 0"),
    ("weight_decay", -0.1, "weight_decay must be >= 0"),
    ("warmup_ratio", 1.0, r"warmup_ratio must be in \[0, 1\)"),
    ("max_grad_norm", -1.0, "max_grad_norm must be >= 0"),
    ("batch_size", 0, "batch_size must be an int >= 1"),
    ("batch_size", 8.0, "batch_size must be an int >= 1"),
    ("max_length", True, "max_length must be an int >= 1"),
    ("seed", -1, "seed must be an int >= 0"),
    ("lr", "1e-4", "lr must be a finite number"),
])
def test_bad_values_name_the_field(field, value, message):
    with pytest.raises(ValueError, match=f"TrainingSchedule.{message}"):
        TrainingSchedule(**{field: value})
    with pytest.raises(ValueError, match=f"TrainingSchedule.{message}"):
        TrainingSchedule().replace(**{field: value})  # replace checks too


def test_unknown_setting_is_refused():
    with pytest.raises(TypeError, match="lrr"):
        TrainingSchedule(lrr=1e-4)


def test_steps_and_warmup():
    schedule = TrainingSchedule(epochs=2, batch_size=8, warmup_ratio=0.25)
    assert schedule.steps(50) == (7, 14)  # ceil(50 / 8) per epoch
    assert schedule.warmup_steps(14) == 3
    assert TrainingSchedule(epochs=0.01, batch_size=8).steps(50) == (7, 1)  # at least one step


def test_defaults_of_the_methods():
    assert TrainingSchedule().lr == 5e-5 and ADVERSARIAL_SCHEDULE.lr == 2e-5
    assert (MASK_SCHEDULE.lr, MASK_SCHEDULE.weight_decay, MASK_SCHEDULE.warmup_ratio, MASK_SCHEDULE.max_grad_norm) \
        == (0.1, 0.0, 0.0, 0.0)
    assert list(TrainingSchedule().as_dict()) == ["epochs", "batch_size", "lr", "weight_decay", "warmup_ratio",
                                                  "max_grad_norm", "max_length", "seed"]
