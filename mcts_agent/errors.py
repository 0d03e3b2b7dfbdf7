"""Errors raised by mcts-agent. Each names the bad input and what was expected."""


class MctsAgentError(Exception):
    """Base class of every error this framework raises on purpose."""


class ConfigError(MctsAgentError, ValueError):
    """A configuration value is out of range or of the wrong kind."""


class ModelLoadError(MctsAgentError):
    """A model id or path could not be resolved or loaded."""


class BackendError(MctsAgentError):
    """A policy backend failed to serve a request."""


class PromptTooLongError(BackendError, ValueError):
    """A prompt (plus max_tokens) does not fit the model's context window."""


class ServerError(BackendError):
    """An HTTP model server failed, timed out, or answered with an error."""


class CriticError(MctsAgentError):
    """A critic returned values that cannot be used (NaN, wrong count, ...)."""


class EnvError(MctsAgentError):
    """An environment was misused or given bad data."""


class TreeFormatError(MctsAgentError, ValueError):
    """A tree file is corrupted or has an unknown schema version."""


class TrainingDataError(MctsAgentError, ValueError):
    """Trees or records cannot yield training data (none given, none meeting the thresholds, ...)."""
