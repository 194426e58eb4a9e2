"""Value checks shared by every layer (a leaf module: it imports nothing of ours).

Configuration is checked where it is loaded, and `True` is not a number there:
YAML turns `yes` into a bool, and a threshold of `yes` is a mistake to report.
"""

from __future__ import annotations

import math


def is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
