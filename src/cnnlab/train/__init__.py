"""Training: config, optimiser, schedules, checkpoints, run directories, and the loop."""

from cnnlab.train.checkpoint import load_checkpoint, save_checkpoint
from cnnlab.train.config import TrainConfig, resolve
from cnnlab.train.evaluate import evaluate
from cnnlab.train.objective import ClassificationObjective, Objective
from cnnlab.train.optim import AlexNetSGD, make_scheduler
from cnnlab.train.setup import TrainingRun, build_run, model_from_checkpoint, resolve_device
from cnnlab.train.trainer import Trainer

__all__ = [
    "AlexNetSGD",
    "ClassificationObjective",
    "Objective",
    "TrainConfig",
    "Trainer",
    "TrainingRun",
    "build_run",
    "evaluate",
    "load_checkpoint",
    "make_scheduler",
    "model_from_checkpoint",
    "resolve",
    "resolve_device",
    "save_checkpoint",
]
