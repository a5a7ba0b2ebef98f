# cython: language_level=3
"""The data plane's clocks; see clock.pxd."""

from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC, CLOCK_REALTIME


cdef extern from "<time.h>" nogil:
    enum: CLOCK_MONOTONIC_COARSE


# PERF: one pair of clock reads per batch of socket events instead of five per proxied
# request (the vDSO was ~1.3% of the worker's CPU; bench/wrk_compare.py, scenario keepalive)
cdef double batch_time = 0.0        # 0: no batch is running
cdef long long batch_epoch_ms = 0


cdef double monotonic() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <double>ts.tv_sec + <double>ts.tv_nsec * 1e-9


cdef double monotonic_coarse() noexcept nogil:
    """PERF: the batch's time, else the kernel's last tick, read without the TSC; a deadline
    a few ms early does not matter (timeouts are swept every 100 ms) (bench/wrk_compare.py,
    scenario keepalive)."""
    cdef timespec ts
    if batch_time != 0.0:
        return batch_time
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts)
    return <double>ts.tv_sec + <double>ts.tv_nsec * 1e-9


cdef long long epoch_ms() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_REALTIME, &ts)
    return <long long>ts.tv_sec * 1000 + ts.tv_nsec // 1000000


cdef double event_time() noexcept nogil:
    if batch_time != 0.0:
        return batch_time
    return monotonic()


cdef long long event_epoch_ms() noexcept nogil:
    if batch_time != 0.0:
        return batch_epoch_ms
    return epoch_ms()


cdef void batch_begin() noexcept nogil:
    global batch_time, batch_epoch_ms
    batch_time = monotonic()
    batch_epoch_ms = epoch_ms()


cdef void batch_end() noexcept nogil:
    global batch_time
    batch_time = 0.0


def monotonic_s():
    """The clock every `start`/`end` field uses, for Python code and tests."""
    return monotonic()


def event_time_s():
    """event_time(), for tests."""
    return event_time()
