"""The library's one error tree.

Every error a user can cause (a bad mix, a broken template, an unreadable
model, a locked output folder) is a `GenError` whose message already names the
file and the key. The CLI turns these into one clean line and a non-zero exit;
anything else is a bug and keeps its traceback.
"""


class GenError(Exception):
    """Base class for errors caused by input, configuration or environment."""


class MixError(GenError):
    """A mix file is missing, malformed or names something that does not exist."""


class TemplateError(GenError):
    """A template family is malformed, unsafe or fails to render."""


class EngineError(GenError):
    """An engine cannot be created or a model cannot be loaded."""


class ShardError(GenError):
    """A shard or manifest is unreadable or inconsistent."""


class BuildError(GenError):
    """A build cannot proceed: the output folder is locked or holds another build."""


class EvalError(GenError):
    """An eval set, an eval item or an eval report is malformed."""
