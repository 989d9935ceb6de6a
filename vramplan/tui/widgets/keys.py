"""Keys run in the order they were typed, however fast they come.

Textual gives a key to the focused widget, whose `_on_key` inserts a typed character at
once; a key bound to an action (Backspace, the arrows, Up/Down on a number, Space on a
checkbox) runs only when the event has bubbled up to the App's queue, behind the keys typed
meanwhile (Textual issue 6605). When the app is busy for a moment and keys queue up,
"0 1 Backspace 6" then gave "01" instead of "06", and a Space pressed just before Tab
acted on the next knob. `KeysInOrder` runs the widget's own bindings where its typed
characters are handled, so both keep the order of the keyboard.
"""
from __future__ import annotations

from textual import events


class KeysInOrder:
    """Mixin (first in the bases) for focusable widgets: run this widget's bindings inline."""

    async def _on_key(self, event: events.Key) -> None:
        if not self.has_focus:  # a key bubbling up from a child (a Select's open list) is the child's
            return
        for binding in self._bindings.key_to_bindings.get(event.key, ()):
            if binding.priority:
                continue  # the App ran priority bindings when the key arrived
            if await self.app.run_action(binding.action, self):
                event.stop()
                event.prevent_default()  # neither the base class nor the App runs it again
                return
