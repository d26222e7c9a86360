"""Errors that orgaseg reports to its users.

Every problem with the user's input (a missing path, an unknown format, a
volume of the wrong dimensionality, an empty mask, K larger than the sample)
is raised as :class:`OrgasegError` with a message that names the problem. The
command line turns it into one line on stderr and exit code 2.
"""

from __future__ import annotations


class OrgasegError(ValueError):
    """A problem with the user's input, reported without a traceback."""
