"""The browser demo: `worldmodel play` or `python -m worldmodel.app` (see main.py; keys in keymap.py)."""
