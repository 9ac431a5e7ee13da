"""Types and helpers every other layer shares. Imports nothing else from focuskit."""
