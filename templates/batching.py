"""How a tritongen Python-backend model answers the requests Triton hands it together: their
inputs merged row-wise into one batch, the result split back into one response per request,
and, when the batch fails, each request run alone so that only the one that caused the failure
gets an error.

Copied next to every model.py that batches requests; imports only numpy and the standard
library.
"""

import asyncio

import numpy as np


def merged(feeds):
    """One feed (input name -> array) holding every request's rows, in request order."""
    if len(feeds) == 1:
        return feeds[0]
    return {name: np.concatenate([f[name] for f in feeds]) for name in feeds[0]}


def row_count(feed):
    return len(next(iter(feed.values())))


def row_slices(counts):
    """The rows of each request in the merged batch, given each request's row count."""
    slices, start = [], 0
    for count in counts:
        slices.append(slice(start, start + count))
        start += count
    return slices


def answer(feeds, run, respond, error, failure=Exception, run_alone=None):
    """One response per request: `respond(row_counts, run(batch))`. When the batch raises
    `failure` and holds several requests, each runs alone (through `run_alone`, default `run`);
    a request that fails alone, or a lone request, gets `error(exc)`."""
    try:
        result = run(merged(feeds))
    except failure as exc:
        if len(feeds) == 1:
            return [error(exc)]
        return [_answer_alone(feed, run_alone or run, respond, error, failure) for feed in feeds]
    return respond([row_count(f) for f in feeds], result)


def _answer_alone(feed, run, respond, error, failure):
    try:
        result = run(feed)
    except failure as exc:
        return error(exc)
    return respond([row_count(feed)], result)[0]


async def answer_async(feeds, ask, respond, retry_alone):
    """`answer` for an `ask(batch)` coroutine whose result says itself what failed: when
    `retry_alone(result)` and the batch holds several requests, each is asked again alone, all
    at once."""
    result = await ask(merged(feeds))
    if len(feeds) > 1 and retry_alone(result):
        retried = await asyncio.gather(*(ask(feed) for feed in feeds))
        return [respond([row_count(f)], r)[0] for f, r in zip(feeds, retried, strict=True)]
    return respond([row_count(f) for f in feeds], result)
