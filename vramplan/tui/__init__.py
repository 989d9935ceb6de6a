"""`vramplan tui`: a Textual what-if explorer over the planner.

`state.py` holds the knobs and calls the library (no Textual); `app.py`, `screens.py`
and `widgets/` only show what it returns; `app.tcss` styles them. Textual is imported
only by the modules that draw, never by `import vramplan`.
"""
