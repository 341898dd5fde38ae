"""Processing building blocks shared by families, without torch: WordPiece vocabularies.

Family processors live in their family folders (e.g. `vlexport.families.visual_bert.processor`).
"""
