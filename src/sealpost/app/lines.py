"""A list drawn line by line: the base of the conversation list and the message list.

Textual's ``ListView`` mounts a widget (two, with its label) per item, and every widget
costs layout time: fifty conversations or a few pages of messages took hundreds of
milliseconds to show. :class:`LineList` is one widget (Textual's line API, as its
``RichLog``): each :class:`Row` is rendered to lines once for the width shown, and
only the lines in view are drawn. A cursor chooses a row (Up, Down, Home, End, a
click); Enter, or a click when ``select_on_click``, posts :class:`LineList.Selected`.
"""

from __future__ import annotations

from typing import ClassVar, Generic, TypeVar

from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Region, Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

__all__ = ["LineList", "Row"]


class Row:
    """One row of a :class:`LineList`: what it draws, rendered once per width."""

    def __init__(self) -> None:
        self._lines: tuple[int, list[Strip]] | None = None  # (width, lines)

    def render(self) -> Text:
        raise NotImplementedError

    def changed(self) -> None:
        """What it draws changed: render it again."""
        self._lines = None

    def lines(self, owner: LineList[R], width: int) -> list[Strip]:
        if self._lines is None or self._lines[0] != width:
            self._lines = (width, owner.render_strips(self.render(), width))
        return self._lines[1]


R = TypeVar("R", bound=Row)


class LineList(ScrollView, Generic[R], can_focus=True):
    """Rows drawn line by line, with a cursor (see the module's docstring)."""

    class Selected(Message):
        def __init__(self, owner: LineList[Row], index: int) -> None:
            super().__init__()
            self.owner = owner
            self.index = index

        @property
        def control(self) -> LineList[Row]:
            return self.owner

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "cursor_up", "previous", show=False),
        Binding("down", "cursor_down", "next", show=False),
        Binding("home", "first", show=False),
        Binding("end", "last", show=False),
        Binding("pageup", "page_up", show=False),
        Binding("pagedown", "page_down", show=False),
        Binding("enter", "select", show=False),
    ]
    COMPONENT_CLASSES: ClassVar[set[str]] = {"line-list--cursor", "line-list--cursor-blur"}
    DEFAULT_CSS = """
    LineList { background: $surface; overflow-y: auto; overflow-x: hidden; }
    LineList:focus { background-tint: $foreground 5%; }
    LineList > .line-list--cursor-blur {
        background: $block-cursor-blurred-background;
        color: $block-cursor-blurred-foreground;
    }
    LineList > .line-list--cursor {
        background: $block-cursor-background;
        color: $block-cursor-foreground;
    }
    """

    select_on_click = False

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.rows: list[R] = []
        self._index: int | None = None  # the chosen row
        self._width = 0
        self._strips: list[Strip] = []
        self._owner: list[int] = []  # per line: the index of its row (-1: a heading)
        self._first: list[int] = []  # per row: its first line (after its heading)

    # -- what subclasses say

    def head(self, index: int) -> Text | None:
        """A heading drawn above row ``index`` (None: none)."""
        return None

    # -- the cursor

    @property
    def index(self) -> int | None:
        return self._index

    @index.setter
    def index(self, value: int | None) -> None:
        if value is not None and self.rows:
            value = max(0, min(len(self.rows) - 1, value))
        elif not self.rows:
            value = None
        self._index = value
        self.show_cursor()
        self.refresh()

    @property
    def highlighted(self) -> R | None:
        return None if self._index is None else self.rows[self._index]

    def show_cursor(self, *, center: bool = False) -> None:
        if self._index is None or self._index >= len(self._first) or not self._width:
            return
        top = self._first[self._index]
        height = len(self.rows[self._index].lines(self, self._width))
        self.scroll_to_region(
            Region(0, top, self._width, height), animate=False, center=center, immediate=True
        )

    async def action_cursor_up(self) -> None:
        self.index = len(self.rows) - 1 if self._index is None else self._index - 1

    async def action_cursor_down(self) -> None:
        self.index = len(self.rows) - 1 if self._index is None else self._index + 1

    def action_first(self) -> None:
        self.index = 0

    def action_last(self) -> None:
        self.index = len(self.rows) - 1

    def action_page_up(self) -> None:
        self.scroll_page_up(animate=False)

    def action_page_down(self) -> None:
        self.scroll_page_down(animate=False)

    def action_select(self) -> None:
        if self._index is not None:
            self.post_message(self.Selected(self, self._index))  # type: ignore[arg-type]

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None:
            return
        line = int(self.scroll_y) + offset.y
        if 0 <= line < len(self._owner) and self._owner[line] >= 0:
            self.index = self._owner[line]
            if self.select_on_click:
                self.action_select()

    # -- drawing

    def render_strips(self, text: Text, width: int) -> list[Strip]:
        console = self.app.console
        lines = console.render_lines(text, console.options.update_width(width), pad=True)
        return [Strip(line, width) for line in lines]

    def layout_rows(self) -> None:
        """Lay the rows out as lines for the current width (rows already rendered at
        this width are not rendered again)."""
        width = self.scrollable_content_region.width
        if width <= 0:
            return  # not sized yet: laid out on the first resize
        self._width = width
        strips: list[Strip] = []
        owner: list[int] = []
        first: list[int] = []
        for i, row in enumerate(self.rows):
            heading = self.head(i)
            if heading is not None:
                lines = self.render_strips(heading, width)
                strips.extend(lines)
                owner.extend([-1] * len(lines))
            first.append(len(strips))
            lines = row.lines(self, width)
            strips.extend(lines)
            owner.extend([i] * len(lines))
        self._strips, self._owner, self._first = strips, owner, first
        self.virtual_size = Size(width, len(strips))
        self.refresh()

    @property
    def line_count(self) -> int:
        return len(self._strips)

    def on_resize(self, event: events.Resize) -> None:
        if self.scrollable_content_region.width != self._width:
            self.layout_rows()
            self.call_after_refresh(self.show_cursor)

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        line = scroll_y + y
        width = self.scrollable_content_region.width
        if line >= len(self._strips):
            return Strip.blank(width, self.rich_style)
        strip = self._strips[line].crop_extend(scroll_x, scroll_x + width, self.rich_style)
        if self._index is not None and self._owner[line] == self._index:
            cursor = "line-list--cursor" if self.has_focus else "line-list--cursor-blur"
            strip = strip.apply_style(self.get_component_rich_style(cursor))
        return strip.apply_style(self.rich_style)

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()
