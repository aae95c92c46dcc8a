"""aibatch: push thousands of Messages API requests through a rate limit, losing nothing."""

__version__ = "0.1.0"
