"""ner-quality application layer: model runtime, Label Studio ML backend app, and the CLI.

Nothing here loads a model or touches the network at import time.
"""

__version__ = "0.1.0"
