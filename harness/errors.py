"""The harness's exception tree.

Every error a user can cause derives from :class:`UserError`; the CLI prints its message as
one line and exits with code 2. Everything else is a bug or an outage and exits with code 1.

::

    HarnessError
    ├── UserError                     bad input: exit 2, one line, nothing written
    │   ├── ConfigError               unknown key, wrong type, unreadable file, bad --set
    │   ├── DatasetError              bad or missing market data, window outside what is recorded
    │   ├── StrategyError             unknown strategy, bad parameter
    │   ├── SafetyError               an endpoint that is neither the testnet nor loopback
    │   └── RunNotFound               a run id that the journal does not hold
    ├── ExchangeError                 the exchange said no, or could not be reached
    │   ├── TemporaryExchangeError    network, 5xx, rate limit: safe to retry with backoff
    │   ├── AuthenticationFailed      bad key or signature (also a UserError)
    │   ├── OrderRejected             the exchange refused an order (filters, funds)
    │   └── OrderNotFound             unknown order id
    └── JournalError                  the journal could not be read or written
"""

from __future__ import annotations


class HarnessError(Exception):
    """Base of every error the harness raises on purpose."""


class UserError(HarnessError):
    """Bad input from the user: reported as one line, exit code 2."""

    exit_code = 2


class ConfigError(UserError):
    """Configuration that cannot be loaded: names the offending key."""


class DatasetError(UserError):
    """Market data that is missing, malformed or outside what is recorded."""


class StrategyError(UserError):
    """A strategy that cannot be found or a parameter it does not take."""


class SafetyError(UserError):
    """A request that could reach a mainnet endpoint or expose a secret."""


class RunNotFound(UserError):
    """A run id that the journal does not hold."""


class ExchangeError(HarnessError):
    """The exchange refused a request or could not be reached."""

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.code = code


class TemporaryExchangeError(ExchangeError):
    """Network trouble, a 5xx or a rate limit: the request may be retried."""


class AuthenticationFailed(ExchangeError, UserError):
    """The exchange did not accept the key or the signature."""


class OrderRejected(ExchangeError):
    """The exchange refused an order (filters, insufficient balance, bad parameters)."""


class OrderNotFound(ExchangeError):
    """The exchange does not know the order."""


class JournalError(HarnessError):
    """The journal could not be read or written."""

