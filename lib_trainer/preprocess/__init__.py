"""Dataset preparation: focal-point crop and resize, taggers (WD14, deepbooru, BLIP), tag edits.

Everything here is plain Python; the WebUI-only taggers live in `webui/taggers.py`.
"""
