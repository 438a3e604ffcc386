"""The root of UCADI's domain errors.

Every error a person can act on (bad CT input, a mismatched ciphertext, a wrong model card...)
subclasses `UcadiError`; its message says what was wrong and what is accepted. The CLI turns it
into one line on stderr and exit code 1 (2 for a `CommandError`, a usage problem, as argparse
exits for one); servicers turn it into a gRPC status.
"""


class UcadiError(Exception):
    """An error with a message meant for a person, raised where it is detected."""

    # The gRPC status code name a servicer answers with (`ucadi.ops.serving.grpc_errors`).
    status = "INVALID_ARGUMENT"


class CommandError(UcadiError):
    """A command-line usage problem found after argument parsing."""
