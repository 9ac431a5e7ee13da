"""The one rule for concept names, shared by the CLI, the HTTP API and the web page (which mirrors it in app.js).

A name travels in URL paths (`/concepts/{name}`), in file-system-facing places (exports, folder layouts) and in
prompts, so it must survive all three: 1 to `MAX_NAME_LENGTH` characters after stripping surrounding spaces, no
`/` or `\\`, not `.` or `..`, and no control characters (newlines, tabs, NUL, DEL, ...). Anything else, including
spaces, dots inside a name and non-ASCII letters, is kept as given.
"""

from __future__ import annotations

import unicodedata

from focuskit.core.errors import ConceptNameError

MAX_NAME_LENGTH = 200
"""Characters, after stripping; the memory enforces the same limit."""
RULE = "1-200 characters, no '/' or '\\', not '.' or '..', no control characters"
"""The rule in words, for error messages and the page."""


def check_concept_name(name: object) -> str:
    """`name` stripped of surrounding spaces, or a `ConceptNameError` saying what is wrong with it.

    >>> check_concept_name("  my red mug ")
    'my red mug'
    """
    if not isinstance(name, str):
        raise ConceptNameError(f"a concept name must be text, got {type(name).__name__}")
    clean = name.strip()
    if not clean:
        raise ConceptNameError(f"a concept name must be non-empty ({RULE})")
    if len(clean) > MAX_NAME_LENGTH:
        raise ConceptNameError(f"a concept name may have at most {MAX_NAME_LENGTH} characters, got {len(clean)}")
    if clean in (".", ".."):
        raise ConceptNameError(f"a concept name may not be {clean!r} ({RULE})")
    for bad in ("/", "\\"):
        if bad in clean:
            raise ConceptNameError(f"a concept name may not contain '{bad}', got {clean!r} ({RULE})")
    for ch in clean:
        if unicodedata.category(ch) == "Cc":
            raise ConceptNameError(
                f"a concept name may not contain control characters, got {clean!r} (U+{ord(ch):04X})"
            )
    return clean
