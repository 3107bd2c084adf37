"""Work on a thread pool behind one progress bar, stopping cleanly on Ctrl-C."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Callable, Iterable, Iterator, TypeVar

Item, Result = TypeVar("Item"), TypeVar("Result")


def in_threads(work: Callable[[Item], Result], items: Iterable[Item], *, threads: int, desc: str, unit: str,
               progress: bool = True) -> Iterator[Result]:
    """`work(item)` for every item, `threads` at a time, yielded as each finishes.

    On Ctrl-C (or an error in `work`) nothing new is started and the calls in flight finish
    first, so whatever they journal is kept; then the exception goes on to the caller.
    """
    from tqdm.auto import tqdm  # not at import: `instret --help` stays light

    items = list(items)
    pool = ThreadPoolExecutor(max_workers=max(1, threads))
    try:
        with tqdm(total=len(items), desc=desc, unit=unit, disable=not progress) as bar:
            for future in as_completed([pool.submit(work, item) for item in items]):
                result = future.result()
                bar.update(1)
                yield result
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
