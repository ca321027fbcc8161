"""Fine-tune the student on the pipeline's training sets (TRL SFT, LoRA or full weights).

Importing this package is cheap: torch, transformers, TRL and PEFT load inside ``train``.
"""

from persd.train.config import LoraSettings, TrainConfig, load_train_config
from persd.train.sft import TrainError, TrainResult, TrainSummary, train

__all__ = [
    "LoraSettings",
    "TrainConfig",
    "TrainError",
    "TrainResult",
    "TrainSummary",
    "load_train_config",
    "train",
]
