"""A griffe extension for the API reference: Sphinx roles become code spans.

The docstrings cross-reference with Sphinx roles (``:class:`~standby.Timing```,
``:meth:`Timing.scaled```), which Markdown would show as they are. This turns
each into a code span: the last dotted part for ``~name``, the name as
written otherwise.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:class|meth|func|attr|data|mod|exc|obj|const):`(~?)([^`]+)`")


def _span(match: re.Match[str]) -> str:
    short, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if short else target}`"


class SphinxRolesToCode(griffe.Extension):
    """Rewrite Sphinx roles in every docstring the reference loads."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _ROLE.sub(_span, obj.docstring.value)
