"""The explorer's widgets: knobs in, verdict / bar / table / limits / advice out."""
from vramplan.tui.widgets.advice_list import AdviceList
from vramplan.tui.widgets.component_table import ComponentTable
from vramplan.tui.widgets.knobs import KnobPanel
from vramplan.tui.widgets.memory_bar import MemoryBar
from vramplan.tui.widgets.summary import Limits, RankSummary, Verdict

__all__ = ["AdviceList", "ComponentTable", "KnobPanel", "Limits", "MemoryBar", "RankSummary", "Verdict"]
