"""depsim: forecast post-release misbehaviour rates by simulating deployment."""
__version__ = "0.1.0"
