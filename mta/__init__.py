"""mta: a pure-Python mail transfer agent on Twisted, configured like Postfix."""

__version__ = "0.1.0"
