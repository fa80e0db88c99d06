"""The exception type raised by every fleetpipe call that fails."""


class Error(Exception):
    """A fleetpipe error.

    Attributes:
        code: the numeric fleetpipe error code (``fleetpipe::errc``).
        reason: the code's short description, e.g. ``"invalid configuration"``.
        json_pointer: for config errors, the JSON pointer of the offending key
            (e.g. ``"/uploader/bandwidth/bytes_per_second"``), else ``""``.
    """

    def __init__(self, message, code=0, reason="", json_pointer=""):
        super().__init__(message)
        self.message = message
        self.code = code
        self.reason = reason
        self.json_pointer = json_pointer

    __module__ = "fleetpipe"  # shown as fleetpipe.Error in tracebacks

    def __reduce__(self):
        return (Error, (self.message, self.code, self.reason, self.json_pointer))
