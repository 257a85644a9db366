"""The browser demo: `worldmodel play` or `python -m app` (see app/main.py; keys in app/keymap.py)."""
