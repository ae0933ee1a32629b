"""The tasks: one `Task` object per task (`classify`, `match`, `multilabel`, `align`), found by `get_task`.

See `mmkeras.tasks.task` for what a task owns, and `mmkeras.tasks.registry`
for the names. Kept free of imports: importing one task module runs this file first.
"""
