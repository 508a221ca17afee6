"""Project exceptions: errors a user can cause carry one actionable line."""


class SharpgenError(Exception):
    """A user-facing error (bad input, bad config, missing artefact).

    The CLI prints ``str(error)`` on one line and exits with code 2, without a traceback.
    """
