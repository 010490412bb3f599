"""The unlearning core: tasks, arguments, methods, and the one ``run`` every command calls."""
from .args import Runtime, UnlearnArgs
from . import baselines as _baselines  # noqa: F401  (registers ssd, finetune, neggrad, neggrad+, retrain)
from .methods import METHODS, Method, MethodOutcome, ModelContext
from .run import UnlearnResult, run
from .tasks import SCALE_CRITERIA, BackdoorRecovery, ClassRemoval, SampleRemoval, Target, Task

__all__ = ["METHODS", "SCALE_CRITERIA", "BackdoorRecovery", "ClassRemoval", "Method", "MethodOutcome", "ModelContext", "Runtime",
           "SampleRemoval", "Target", "Task", "UnlearnArgs", "UnlearnResult", "run"]
