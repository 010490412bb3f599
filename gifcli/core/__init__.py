"""The unlearning core: tasks, arguments, methods, and the one ``run`` every command calls."""
from .args import Runtime, UnlearnArgs
from .methods import METHODS, Method, MethodArgs, MethodOutcome, ModelContext
from .run import UnlearnResult, run
from .tasks import SCALE_CRITERIA, BackdoorRecovery, ClassRemoval, SampleRemoval, Target, Task

__all__ = ["METHODS", "SCALE_CRITERIA", "BackdoorRecovery", "ClassRemoval", "Method", "MethodArgs", "MethodOutcome",
           "ModelContext", "Runtime", "SampleRemoval", "Target", "Task", "UnlearnArgs", "UnlearnResult", "run"]
