"""backtrader data feeds fed from the dataset store.

- :class:`ReplayFeed` fills backtrader's line buffers from numpy arrays in one copy per line
  (backtrader's own ``PandasData`` reads row by row and spends most of a run loading), and
  advances without the tick bookkeeping a plain bar replay does not need.
- Bars carry their **close** time as backtrader's datetime: a strategy's ``next()`` for a bar
  runs when that bar has closed, and an order it sends is stamped with that moment, which is
  also the open time of the bar it can first fill on.
- :func:`forbid_lookahead` swaps the line buffers a strategy reads for ones that raise
  :class:`LookAheadError` on a positive index (``close[1]``): with preloaded data the future
  is in memory, and reading it must be caught, not silently allowed.
"""

from __future__ import annotations

from array import array
from itertools import repeat

import backtrader as bt
import numpy as np
from backtrader.linebuffer import LineBuffer

from harness.datasets import Bars
from harness.errors import HarnessError
from harness.model import timeframe_ms

EPOCH_ORDINAL = 719163.0        # backtrader's date number of 1970-01-01T00:00Z
MS_PER_DAY = 86_400_000.0


class LookAheadError(HarnessError):
    """A strategy read a bar (or indicator value) that had not closed yet."""


def ms_to_num(ms: np.ndarray | int) -> np.ndarray | float:
    """Milliseconds since the epoch → backtrader date numbers (float days)."""
    return EPOCH_ORDINAL + np.asarray(ms, dtype=np.float64) / MS_PER_DAY


def num_to_ms(num: float) -> int:
    """backtrader date number → milliseconds since the epoch (exact to the ms)."""
    return int(round((num - EPOCH_ORDINAL) * MS_PER_DAY))


def _bt_timeframe(tf_ms: int) -> tuple[int, int]:
    if tf_ms % 86_400_000 == 0:
        return bt.TimeFrame.Days, tf_ms // 86_400_000
    if tf_ms % 60_000 == 0:
        return bt.TimeFrame.Minutes, tf_ms // 60_000
    return bt.TimeFrame.Seconds, max(tf_ms // 1000, 1)


class ReplayFeed(bt.feed.DataBase):
    """A preloaded feed over one symbol's bars (runonce path)."""

    lines = ()

    def __init__(self, bars: Bars):
        super().__init__()
        self.symbol = bars.symbol
        self.tf_ms = timeframe_ms(bars.timeframe)
        self._name = bars.symbol
        self._timeframe, self._compression = _bt_timeframe(self.tf_ms)
        self._bars = bars
        self._dtnum: array | None = None

    def preload(self) -> None:
        bars = self._bars
        columns = {
            "datetime": ms_to_num(bars.ts + self.tf_ms),   # close time (see module docstring)
            "open": bars.open, "high": bars.high, "low": bars.low, "close": bars.close,
            "volume": bars.volume, "openinterest": np.zeros(len(bars)),
        }
        for name, values in columns.items():
            line = getattr(self.lines, name)
            line.array = array("d", np.ascontiguousarray(values, dtype=np.float64).tobytes())
        self._dtnum = self.lines.datetime.array
        self.home()

    def _load(self) -> bool:
        return False

    def advance_peek(self) -> float:
        nxt = self.lines.datetime._idx + 1
        arr = self._dtnum
        return arr[nxt] if arr is not None and nxt < len(arr) else float("inf")

    def advance(self, size: int = 1, datamaster=None, ticks: bool = True) -> None:
        for line in self.lines:        # plain LineBuffers in unbounded mode: no QBuffer logic
            line._idx += size
            line.lencount += size


def _forward(self, value=float("nan"), size=1):
    """``LineBuffer.forward`` with one ``extend`` instead of ``size`` appends (same result)."""
    self.idx += size
    self.lencount += size
    if size == 1:
        self.array.append(value)
    else:
        self.array.extend(repeat(value, size))


def install_fast_forward() -> None:
    """Speed up indicator set-up on long runs: backtrader grows each buffer one append at a time."""
    LineBuffer.forward = _forward


def _no_peek_getitem(self, ago):
    if ago > 0:
        raise LookAheadError(f"a strategy read a value {ago} bar(s) ahead ({type(self).__name__}): "
                             "strategies may only use bars that have closed")
    return self.array[self.idx + ago]


def _no_peek_get(self, ago=0, size=1):
    if ago > 0:
        raise LookAheadError(f"a strategy read values {ago} bar(s) ahead ({type(self).__name__}): "
                             "strategies may only use bars that have closed")
    return LineBuffer.get(self, ago, size)


_GUARDED: dict[type, type] = {}


def _guarded_class(cls: type) -> type:
    """A subclass of a line-buffer class whose indexing refuses the future (cached per class)."""
    guarded = _GUARDED.get(cls)
    if guarded is None:
        guarded = _GUARDED[cls] = type(f"NoPeek{cls.__name__}", (cls,),
                                       {"__getitem__": _no_peek_getitem, "get": _no_peek_get,
                                        "__module__": __name__})
    return guarded


def _guard_buffer(line) -> None:
    cls = type(line)
    if cls not in _GUARDED.values():
        line.__class__ = _guarded_class(cls)


def forbid_lookahead(item) -> None:
    """Guard a feed, an indicator or a line operation against reads of the future.

    Every line buffer it owns refuses a positive index (``close[1]``), and a line built from
    the future (``close(1)``, backtrader's forward delay) is refused outright.
    """
    from backtrader.linebuffer import _LineForward

    if isinstance(item, _LineForward):
        raise LookAheadError("a strategy built a line from the future (e.g. data.close(1)): strategies may "
                             "only use bars that have closed; use data.close(-1) for the previous bar")
    if isinstance(item, LineBuffer):
        _guard_buffer(item)
        return
    for line in item.lines:
        if isinstance(line, LineBuffer):
            _guard_buffer(line)


class LiveFeed(bt.feed.DataBase):
    """A feed of closed bars pushed by the live session's market-data job (next-mode path).

    ``push`` queues a bar (open time in ms, OHLCV); backtrader pulls it in ``_load``. Bars
    marked ``warmup`` only warm indicators: the bound strategy's ``next`` is skipped on them.
    ``finish`` ends the feed once the queue drains.
    """

    lines = ()

    def __init__(self, symbol: str, timeframe: str, poll_s: float = 0.05):
        super().__init__()
        import queue

        self.symbol = symbol
        self.tf_ms = timeframe_ms(timeframe)
        self._name = symbol
        self._timeframe, self._compression = _bt_timeframe(self.tf_ms)
        self._queue: queue.Queue = queue.Queue()
        self._poll_s = poll_s
        self._done = False
        self.warming = False

    def islive(self) -> bool:
        return True

    def haslivedata(self) -> bool:
        return not self._queue.empty()

    def push(self, ts: int, o: float, h: float, low: float, c: float, v: float, warmup: bool = False) -> None:
        self._queue.put((ts, o, h, low, c, v, warmup))

    def finish(self) -> None:
        self._queue.put(None)

    def _load(self):
        import queue

        if self._done:
            return False
        try:
            item = self._queue.get(timeout=self._poll_s)
        except queue.Empty:
            return None
        if item is None:
            self._done = True
            return False
        ts, o, h, low, c, v, warmup = item
        lines = self.lines
        lines.datetime[0] = float(ms_to_num(ts + self.tf_ms))
        lines.open[0], lines.high[0], lines.low[0], lines.close[0], lines.volume[0] = o, h, low, c, v
        lines.openinterest[0] = 0.0
        self.warming = warmup
        return True
