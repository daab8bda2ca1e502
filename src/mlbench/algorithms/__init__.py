"""Communication schemes / distributed optimizers, one module each."""
