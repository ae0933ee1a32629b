"""`get_task`: the one place that maps a task's name (`RunConfig.task`, or `align`) to its `Task` object.

Example:
>>> get_task("multilabel").output.activation
'sigmoid'
>>> sorted(TASKS)
['align', 'classify', 'match', 'multilabel']
"""

from pathlib import Path

from mmkeras.runs import BUNDLE_FILE, is_align_run, is_run_folder, load_run_config
from mmkeras.runtime.bundle import read_bundle
from mmkeras.tasks.align import AlignTask
from mmkeras.tasks.classification import ClassificationTask
from mmkeras.tasks.match import MatchTask
from mmkeras.tasks.multilabel import MultiLabelTask
from mmkeras.tasks.task import Task

# Every task by its name; `RunConfig.task` chooses among those `mmkeras.config.TASKS` lists, `align` is its own job.
TASKS = {task.name: task for task in (ClassificationTask(), MatchTask(), MultiLabelTask(), AlignTask())}
# The task of a bundle written before bundle.json recorded one (a softmax classifier).
DEFAULT_TASK = "classify"


def get_task(name: str) -> Task:
    """The `Task` named `name` (a `RunConfig.task` choice, or `align`)."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; the tasks are {', '.join(TASKS)}") from None


def target_task(target) -> Task:
    """The task of a run folder, or of a classifier bundle (bundle.json's `task`; a dual-encoder bundle is
    refused by `read_bundle`, naming its kind). Anything else: the default task, whose loading says what is
    wrong with it."""
    target = Path(target)
    if (target / BUNDLE_FILE).is_file():
        return get_task(read_bundle(target).get("task", DEFAULT_TASK))
    if is_run_folder(target):
        return get_task("align") if is_align_run(target) else get_task(load_run_config(target).task)
    return get_task(DEFAULT_TASK)
