"""One exception root for Herald; third-party errors are wrapped where the library is called."""


class HeraldError(Exception):
    """Root of every error Herald raises on purpose."""


class ConfigError(HeraldError):
    """A setting or policy is invalid; the message names the field and the problem."""


class DecodeError(HeraldError):
    """Bytes are not a valid event of the contract.

    ``kind`` is a stable machine-readable class (``not_single_object``, ``unknown_schema``,
    ``malformed``, ``oversized``, ``invalid``) that lands in the dead-letter headers.
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


class EmitError(HeraldError):
    """An event could not be validated, encoded or produced."""


class WarehouseError(HeraldError):
    """The warehouse refused a query or an insert, or could not be reached."""


class KafkaUnavailableError(HeraldError):
    """The Kafka broker could not be started or reached."""
