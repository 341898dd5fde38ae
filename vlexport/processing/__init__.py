"""Processing building blocks shared by families, without torch: WordPiece vocabularies.

Family processors live in their family folders (`vlexport/families/<name>/processor.py`).
"""
