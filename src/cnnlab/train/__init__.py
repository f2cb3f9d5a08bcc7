"""Training: config, optimiser, schedules, checkpoints, run directories, and the loop."""

from cnnlab.train.checkpoint import find_resume_checkpoint, load_checkpoint, load_latest_checkpoint, save_checkpoint
from cnnlab.train.config import PAPER_RECIPES, TrainConfig, resolve
from cnnlab.train.ema import ModelEMA
from cnnlab.train.evaluate import evaluate
from cnnlab.train.objective import ClassificationObjective, Objective
from cnnlab.train.optim import AlexNetSGD, make_optimizer, make_scheduler
from cnnlab.train.record import ModelSpec, RunRecord
from cnnlab.train.setup import TrainingRun, build_run, resolve_device
from cnnlab.train.task import ClassificationTask, Part, Task
from cnnlab.train.trainer import Trainer

__all__ = [
    "PAPER_RECIPES",
    "AlexNetSGD",
    "ClassificationObjective",
    "ClassificationTask",
    "ModelEMA",
    "ModelSpec",
    "Objective",
    "Part",
    "RunRecord",
    "Task",
    "TrainConfig",
    "Trainer",
    "TrainingRun",
    "build_run",
    "evaluate",
    "find_resume_checkpoint",
    "load_checkpoint",
    "load_latest_checkpoint",
    "make_optimizer",
    "make_scheduler",
    "resolve",
    "resolve_device",
    "save_checkpoint",
]
