"""Waiting on several native collective handles as one (shared by the framework modules)."""


def wait_all(handles):
    """Waits on every handle, then raises the first error, if any.

    Every handle is waited on even after one fails: an unfinished one would leave its buffer
    lent to the engine while the caller goes on to free or reuse it. Ctrl-C is not held back.
    """
    first_error = None
    for h in handles:
        try:
            h.wait()
        except KeyboardInterrupt:
            raise
        except BaseException as e:
            if first_error is None:
                first_error = e
    if first_error is not None:
        raise first_error


def wait_all_results(handles):
    """``wait_all`` that returns each handle's result, in order."""
    results, first_error = [], None
    for h in handles:
        try:
            results.append(h.wait())
        except KeyboardInterrupt:
            raise
        except BaseException as e:
            results.append(None)
            if first_error is None:
                first_error = e
    if first_error is not None:
        raise first_error
    return results
